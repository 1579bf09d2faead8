"""clfops as users install it: a wheel, installed non-editable, run from a directory that is not the checkout.

How the venv gets its third-party dependencies (torch, Lightning, MLflow: ~2 GB): installing them into a fresh
venv, even from pip's cache, takes minutes on 2 cores, longer than the rest of the suite's install checks
together. So the test makes a real venv (`python -m venv --without-pip`, NOT --system-site-packages), installs
the wheel into it with `pip --python VENV install --no-deps`, and gives it the dev venv's site-packages
through a .pth file. A path listed in a .pth file is only appended to sys.path: the dev venv's own .pth files
(its editable clfops finder among them) are not run, and the new venv's site-packages comes first. The test
asserts that `clfops` resolves to the installed wheel (clfops.__file__ under the venv), not to src/, and that
the configs it composes are the wheel's, so a config file missing from the wheel fails it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "clfops" / "configs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: setuptools from this venv, no download (the build is the same one pip makes).
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=out)
    (found,) = out.glob("clfops-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)]
    done = subprocess.run(install, check=True, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert "already satisfied" not in done.stdout, done.stdout
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=_clean_env(),
    ).stdout.strip()  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_clfops_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return root


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the suite points it at src/), no user config folder."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLFOPS_CONFIG_DIR")}


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_wheel_holds_every_config_and_the_pyfunc_code(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert len(configs) > 20
    missing = [c for c in configs if f"clfops/configs/{c}" not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    assert "clfops/serving/pyfunc_model.py" in names
    assert "clfops/configs/__init__.py" in names
    assert not any(n.startswith("configs/") for n in names)


@pytest.mark.slow
def test_installed_wheel_trains_evaluates_predicts_elsewhere(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(
        venv, work, "python", "-c", "import clfops, clfops.config as C; print(clfops.__file__, C.config_dir())"
    )
    assert where.returncode == 0, where.stderr
    module_file, config_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(venv), module_file  # the wheel's clfops, not src/
    assert Path(config_dir).is_relative_to(venv) and (Path(config_dir) / "train.yaml").is_file()

    helped = _run(venv, work, "clfops", "--help")
    assert helped.returncode == 0 and "train" in helped.stdout
    trained = _run(venv, work, "clfops", "train", *TINY, "run.name=wheel", f"tracking.uri=sqlite:///{work}/mlflow.db")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test accuracy" in trained.stdout
    run_dir = work / "runs" / "wheel"
    assert (run_dir / "model" / "manifest.json").is_file() and (run_dir / "summary.json").is_file()

    evaluated = _run(venv, work, "clfops", "evaluate", "--run-dir", str(run_dir), "--out", "eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (work / "eval" / "classification_report.json").is_file()

    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(images / f"{i}.png")
    predicted = _run(venv, work, "clfops", "predict", "--run-dir", str(run_dir), str(images), "--out", "p.csv")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len((work / "p.csv").read_text().splitlines()) == 3  # header + 2 images
