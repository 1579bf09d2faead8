"""The layering in pyproject.toml ([tool.importlinter]) holds: `lint-imports` exits 0 on the code as it is, and it
fails when a lower layer imports a higher one or when siblings import each other in a cycle."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess:
    """Runs import-linter on the clfops package under `src` (PYTHONPATH decides which copy it analyses)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_contracts_are_kept():
    result = lint_imports(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    names = ("Layers, top to bottom", "cli is the top", "serving imports neither training nor cli", "No import cycle")
    for name in names:
        assert name in result.stdout


def copy_package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "clfops", src / "clfops", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return src


def test_a_lower_layer_importing_a_higher_one_breaks_the_contracts(tmp_path):
    src = copy_package(tmp_path)
    saved_model = src / "clfops" / "serving" / "saved_model.py"
    saved_model.write_text(saved_model.read_text() + "\n\ndef late():\n    from clfops.training import train  # noqa\n")
    result = lint_imports(src, tmp_path / "pyproject.toml")
    assert result.returncode == 1, result.stdout
    assert "serving imports neither training nor cli BROKEN" in result.stdout
    assert "Layers, top to bottom BROKEN" in result.stdout
    assert "clfops.serving.saved_model -> clfops.training.train" in result.stdout


def test_an_import_cycle_inside_a_package_breaks_the_contracts(tmp_path):
    src = copy_package(tmp_path)
    # Two siblings that import each other (lazily, inside functions: the contract counts those too).
    store = src / "clfops" / "tracking" / "store.py"
    rundirs = src / "clfops" / "tracking" / "rundirs.py"
    store.write_text(store.read_text() + "\n\ndef late():\n    from clfops.tracking import rundirs  # noqa\n")
    rundirs.write_text(rundirs.read_text() + "\n\ndef late():\n    from clfops.tracking import store  # noqa\n")
    result = lint_imports(src, tmp_path / "pyproject.toml")
    assert result.returncode == 1, result.stdout
    assert "No import cycle between sibling modules, at any depth BROKEN" in result.stdout


def test_architecture_doc_names_every_module():
    """docs/architecture.md lists each package (`tracking/`) and each module file in it by name."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "src" / "clfops"
    missing = [f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    missing = [name for name in missing if name not in doc]
    for path in package.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py") and path.name not in doc:
            missing.append(str(path.relative_to(package)))
    assert not missing, f"docs/architecture.md does not name: {missing}"
