"""Running and watching the service: ``standalone`` and the Redis it starts, metrics, status-change
webhooks, log format, how task arguments are shown (redaction), and the broker transport that survives a
Redis restart.
"""
