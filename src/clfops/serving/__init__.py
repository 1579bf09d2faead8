"""Serving: the safe model format (saved_model), the one inference path (inference), the one model resolver
(resolve), `clfops predict` (predict) and the MLflow pyfunc model (pyfunc_model).

Nothing here imports training or the CLI: a served model needs only this package, models and data readers."""
