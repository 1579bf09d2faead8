"""`clfops server`: an MLflow tracking server for a team, with its settings checked before it starts."""
