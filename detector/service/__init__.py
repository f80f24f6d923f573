"""The daemon: the loop, intake, checkpointing with restore, model reload, health and metrics.
Above the core and the Kafka wing; loads models through detector.offline.model."""
