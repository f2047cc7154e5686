"""Monitoring: the operator's Prometheus metrics from the store, drift and feedback-loop detection."""
