"""Labelled event simulators (card transactions, industrial sensors) and Kafka replay."""
