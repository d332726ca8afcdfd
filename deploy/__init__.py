"""Deployment helpers: the local Apache Kafka broker (no Docker) and topic provisioning."""
