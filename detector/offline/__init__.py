"""The offline wing: the model artifact, training, calibration, datasets, scoring files,
evaluation, plots and the baselines. Uses the core; never Kafka or the service."""
