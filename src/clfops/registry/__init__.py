"""The model registry: logging a run's model to MLflow, `clfops register | promote | models`, gates, aliases."""
