"""clfops: train, track, evaluate, promote and serve PyTorch image classifiers from one CLI.

The Python API (`clfops.train`, `clfops.evaluate`, `clfops.predict`, `clfops.load_model`; see clfops.api)
is loaded on first use: `import clfops` itself imports neither torch nor Lightning nor MLflow.
"""

from __future__ import annotations

from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING, Any

from clfops.errors import UserError

if TYPE_CHECKING:
    from clfops.api import EvalResult, RunResult, evaluate, load_model, predict, train

__version__ = _dist_version("clfops")  # one place knows it: pyproject.toml, through the installed metadata
__all__ = ["EvalResult", "RunResult", "UserError", "evaluate", "load_model", "predict", "train"]

_API = {"train", "evaluate", "predict", "load_model", "RunResult", "EvalResult", "Probabilities"}


def __getattr__(name: str) -> Any:
    """`clfops.train` & co.: import clfops.api (and, when called, torch) only when first asked for."""
    if name in _API:
        from clfops import api

        return getattr(api, name)
    raise AttributeError(f"module 'clfops' has no attribute {name!r}")
