"""Serving: the safe model format, the one inference path, `clfops predict` and the MLflow pyfunc model.

Nothing here imports training or the CLI: a served model needs only this package, models and data readers."""
