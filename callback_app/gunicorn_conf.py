"""gunicorn settings for the callback app (``gunicorn -c python:callback_app.gunicorn_conf``).

The access log leaves out query strings: ``/oauth/callback?code=…&state=…`` carries
an authorization code, which must never reach a log line.

Threaded workers: a callback waiting on a worker's code exchange, or a slow status
page, must not hold up ``/healthz`` or another callback. Requests are small (a
redirect with a code and a state, a form with one token), so their size is capped
well below gunicorn's defaults; the body is capped in the Flask app.
"""

accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
workers = 2
worker_class = "gthread"
threads = 8
# The callback waits for a worker's code exchange; keep the request alive meanwhile.
timeout = 60
# Request line (method, path and query): a callback URL with a long code and state fits in 8 KB.
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190
