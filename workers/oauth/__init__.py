"""The OAuth 2.0 protocol, as a client: token requests and their answers (RFC 6749), discovery (RFC 8414),
revocation (RFC 7009), provider presets, the OpenID ``id_token`` that says who consented, and the HTTP
transport every outbound request goes through (address checks, pinned connections, a hard deadline, size
caps). It knows nothing of Redis, of how integrations are kept, or of Celery: what it needs of an
integration it is handed.
"""
