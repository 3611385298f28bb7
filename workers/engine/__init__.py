"""The refresh engine: what an integration is and how it lives. Spec validation, the refresh policy
(when, how long to back off), outcomes of token requests, the registry (create, update, delete), the
single-flight refresher, the scheduling tick, the Authorization Code flow with its signed links, key
rotation, and the operator's overview. Plain Python: it is handed a :class:`Runtime` (Redis store, token
client, clock) and imports neither Celery nor Flask.
"""
