"""The status list's rows as HTML."""

from __future__ import annotations

import json

from callback_app.rows import row_html
from workers.engine.overview import row_of


def test_a_rows_html_escapes_what_it_read_from_redis() -> None:
    """Markup in a name, status, reason or account (all from Redis) reaches the page as text."""
    fields = {
        "grant_type": "client_credentials",
        "status": 'active"><script>',
        "reason": "<img src=x onerror=alert(1)>",
        "account": json.dumps({"sub": "<b>1</b>"}),
        "index_cell": "active:client_credentials:",
    }
    html = row_html(row_of("<i>n</i>", fields, now=0), "/status/")
    assert "<script>" not in html and "<img" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and 'href="/status/&lt;i&gt;n&lt;/i&gt;"' in html
