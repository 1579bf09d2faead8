"""The torch-free MLflow pyfunc model: an ONNX graph run by onnxruntime, logged *from code* (this file).

It imports numpy, pandas (MLflow's own dependency), onnxruntime, mlflow and `image_bytes` (clfops/image_bytes.py,
logged beside it as the model's code and importable as a top-level module there), never clfops or torch: the
model's requirements are onnxruntime, numpy, Pillow and mlflow, which every index has.

The graph (serving/onnx_export.py) takes uint8 (N, C, H, W) and holds the whole preprocessing; class names, size
and channels come from its metadata_props. `predict` takes base64 PNG/JPEG/WebP text (or raw bytes) in a column
`image`, or uint8 arrays (N, C, H, W), (N, H, W, C), (N, H, W) of the model's size, and returns the DataFrame the
torch pyfunc model returns: `class`, `probability`, one `p_<class>` per class. A bad request raises
MlflowException(INVALID_PARAMETER_VALUE), which `mlflow models serve` answers with HTTP 400.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class OnnxClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(context.artifacts["onnx"], providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.classes = list(json.loads(meta["classes"]))
        self.channels = int(meta["channels"])
        self.size = tuple(int(v) for v in json.loads(meta["image_size"]))
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import image_bytes  # the model's code (code_paths): on sys.path wherever MLflow loads the model

        batch_size = max(1, int((params or {}).get("batch_size", 512)))
        try:
            images = image_bytes.encoded_images(model_input, self.channels, self.size)
            if images is None:
                images = image_bytes.pixel_array(model_input)
            x = image_bytes.check_batch(images, self.channels, self.size)
        except ValueError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        steps = range(0, len(x), batch_size)
        probs = np.concatenate([self.session.run(None, {self.input_name: x[i : i + batch_size]})[0] for i in steps])
        probs = probs.astype(np.float64)
        top = probs.argmax(axis=1)
        columns: dict[str, Any] = {"class": [self.classes[i] for i in top], "probability": probs.max(axis=1)}
        columns.update({f"p_{name}": probs[:, j] for j, name in enumerate(self.classes)})
        return pd.DataFrame(columns)


mlflow.models.set_model(OnnxClassifier())
