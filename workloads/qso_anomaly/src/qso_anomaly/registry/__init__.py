"""Model registry and release: MLflow tracking, aliases, release gates, model cards.

Import the MLflow-backed parts from :mod:`qso_anomaly.registry.mlflow_registry` (slow import);
gates, evaluation and model cards do not import MLflow.
"""
