"""The MLflow pyfunc model of a clfops classifier, logged *from code*: no pickle in the model at all.

MLflow stores this file (not a pickled object) next to the artifacts `model.safetensors` + `manifest.json`;
`load_context` rebuilds the network from the manifest with `clfops.serving.saved_model.load_model`, which checks the
weights' sha256 (and the class names, when the loader passes `model_config={"expected_classes": [...]}`).

`predict` takes image arrays on the 0-255 scale: uint8 or float, (N, H, W), (N, H, W, C) or (N, C, H, W),
a numpy array, a list of arrays, or a DataFrame whose single column holds one image per row (what JSON
serving gives); or encoded image files (base64 text or bytes) in a column/input `image`, decoded by
clfops/image_bytes.py as `clfops predict` decodes files. A bad input raises MlflowException
(INVALID_PARAMETER_VALUE): HTTP 400 from `mlflow models serve`. It returns a DataFrame with `class`,
`probability` and one `p_<class>` column per class, computed by the one inference path
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

    # `np.ndarray`: one of the hints MLflow derives no schema from (the logged signature has no input schema, and
    # a list[...] hint would impose one; no hint at all draws a warning, shown by MLflow whatever the caller's
    # warning filters). Every input form above still arrives as MLflow parsed it.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from clfops.image_bytes import ImageError, encoded_images
        from clfops.serving.predict import as_array, class_probabilities, probability_frame

        batch_size = int((params or {}).get("batch_size", 512))
        size = (self.manifest.image_size[0], self.manifest.image_size[1])
        try:  # base64 PNG/JPEG/WebP files (REST) decode as `clfops predict` decodes files; else pixel arrays
            images = encoded_images(model_input, self.manifest.in_channels, size)
            images = as_array(model_input) if images is None else images
            if len(images) == 0:
                raise ImageError("empty batch: send at least one image")
            probs = class_probabilities(self.net, self.manifest, images, batch_size)
        except ValueError as err:  # the caller's mistake: HTTP 400 from `mlflow models serve`, one line
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return probability_frame(probs, self.manifest.classes)


mlflow.models.set_model(ClfopsClassifier())
