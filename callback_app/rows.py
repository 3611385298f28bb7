"""The rows of the status list as HTML: one format string per row, every value from Redis escaped.

The list is the page with a hundred rows. Rendered by Jinja, a row is some thirty generator steps
and a dozen attribute lookups, which cost more than reading the rows from Redis (bench/status_page.py
holds the page to 1.5 times those reads); here it is one f-string, and the template puts the
rows in with ``{{ rows_html }}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from markupsafe import Markup

from workers.engine.overview import IntegrationRow

_LOST_TITLE = "from the attempt journal: the rotated refresh token was probably lost"


def rows_html(rows: Iterable[IntegrationRow], path: str) -> Markup:
    """The ``<tr>`` of each row; ``path`` (a URL of ours) + a name is that integration's page."""
    return Markup("\n".join(row_html(row, path) for row in rows))  # noqa: S704 -- row_html escapes each value


def row_html(row: IntegrationRow, path: str) -> str:
    name = escape(row.name)
    notes = ""
    if row.provider:
        notes += f"<br><small>{escape(row.provider)}</small>"
    if row.account:
        notes += f'<br><small class="account" title="the account that consented">{escape(row.account)}</small>'
    reasons = ""
    if row.reason:
        reasons += f'<br><small class="reason">{escape(row.reason)}</small>'
    if row.lost_attempt:
        reasons += f'<br><small class="lost-attempt" title="{_LOST_TITLE}">{escape(row.lost_attempt)}</small>'
    status = escape(row.status)
    # The times are ours (digits and units); everything read from Redis is escaped (the labels: their status
    # and grant with spaces for underscores, which escaping leaves alone).
    return (
        f'<tr data-name="{name}" data-status="{status}"><td class="name"><a href="{path}{name}">{name}</a>{notes}</td>'
        f"<td>{escape(row.grant_type).replace('_', ' ')}</td>"
        f'<td><span class="badge {status}">{status.replace("_", " ")}</span>{reasons}'
        f'</td><td class="expires">{row.expires_text}</td><td class="last">{row.last_refresh_text}</td>'
        f'<td class="next">{row.next_refresh_text}</td></tr>'
    )
