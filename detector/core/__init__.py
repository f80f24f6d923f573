"""The pure core: per-event features, per-stream state and its record format, the LSTM step,
calibrated surprise, thresholds, budgets, explanations and the alert rule. NumPy (and SciPy for
tail fits) only: no Kafka, no Keras, no I/O, no service."""
