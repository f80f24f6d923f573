"""The Kafka wing: `base` (types, interfaces, delivery helpers), one module per client library,
and `factory.client_for`, the one place that picks between them."""
