"""detector: a streaming anomaly-detection daemon (stateful LSTM autoencoder over Kafka)."""

__version__ = "0.1.0"
