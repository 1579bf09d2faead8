"""The MLflow pyfunc model of a clfops classifier, logged *from code*: no pickle in the model at all.

MLflow stores this file (not a pickled object) next to the artifacts `model.safetensors` + `manifest.json`;
`load_context` rebuilds the network from the manifest with `clfops.serving.saved_model.load_model`, which checks the
weights' sha256 (and the class names, when the loader passes `model_config={"expected_classes": [...]}`).

`predict` takes image arrays on the 0-255 scale: uint8 or float, (N, H, W), (N, H, W, C) or (N, C, H, W),
a numpy array, a list of arrays, or a DataFrame whose single column holds one image per row (what JSON
serving gives). Through `mlflow.pyfunc` the logged signature (uint8 (-1, C, H, W)) is enforced first;
`model.unwrap_python_model().predict(None, x)` accepts every form above. It returns a DataFrame with
`class`, `probability` and one `p_<class>` column per class, computed by the one inference path
(`clfops.serving.inference`) that `clfops predict`, `clfops evaluate` and training's validation use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class ClfopsClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from clfops.serving.saved_model import load_model

        expected = (context.model_config or {}).get("expected_classes")
        model_dir = Path(context.artifacts["manifest"]).parent  # MLflow puts both files in one folder
        self.net, self.manifest = load_model(model_dir, expected_classes=expected)

    # `np.ndarray` is what the logged tensor signature delivers, and one of the hints MLflow derives no schema
    # from (a list[...] hint would replace the tensor signature; no hint at all draws a warning, shown by MLflow
    # whatever the caller's warning filters). The other input forms above still work.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from clfops.serving.predict import as_array, class_probabilities, probability_frame

        batch_size = int((params or {}).get("batch_size", 512))
        probs = class_probabilities(self.net, self.manifest, as_array(model_input), batch_size)
        return probability_frame(probs, self.manifest.classes)


mlflow.models.set_model(ClfopsClassifier())
