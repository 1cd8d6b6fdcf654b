"""Metrics and request logs: a server interceptor observes every call; metrics.py is the API the engine records to."""
