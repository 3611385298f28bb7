"""Secrets in transit and at rest: sealed boxes producers make to the service's public key (libsodium
``crypto_box_seal``) and the Fernet encryption of what is kept in Redis, both derived from
``TOKENKEEPER_SECRET_KEY`` and both rotating with it.
"""
