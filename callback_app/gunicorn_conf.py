"""gunicorn settings for the callback app (``gunicorn -c python:callback_app.gunicorn_conf``).

The access log leaves out query strings: ``/oauth/callback?code=…&state=…`` carries
an authorization code, which must never reach a log line.
"""

accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
workers = 2
# The callback waits for a worker's code exchange; keep the request alive meanwhile.
timeout = 60
