"""Placeholder syntax: dotted and bracketed names, known fields only."""

from __future__ import annotations

import pytest

from workers.errors import TemplateError
from workers.templates import placeholders


def test_dotted_and_bracketed_placeholders() -> None:
    """Both forms are found, with any spacing, in order."""
    template = ('Authorization: {{ $.integrations.google_drive.token_type }} '
                '{{$.integrations["name-with-dash"].access_token}} {{ $.integrations[\'x\'].expires_at }}')
    assert placeholders(template) == [("google_drive", "token_type"), ("name-with-dash", "access_token"),
                                      ("x", "expires_at")]


def test_other_expressions_are_left_alone() -> None:
    """Placeholders of other engines ({{ $.steps... }}) are not ours."""
    assert placeholders("{{ $.steps.fetch.output }} plain text") == []


@pytest.mark.parametrize("field", ["refresh_token", "client_secret", "updated_at", "nope"])
def test_unknown_or_secret_fields_are_errors(field: str) -> None:
    """Only access_token, token_type, expires_at, scope and status may be read."""
    with pytest.raises(TemplateError, match=field):
        placeholders(f"{{{{ $.integrations.g.{field} }}}}")


@pytest.mark.parametrize("text", ["{{ $.integrations.g }}", "{{ $.integrations[g].access_token }}",
                                  "{{ $.integrations.g.access_token.more }}"])
def test_malformed_placeholders_are_errors(text: str) -> None:
    """A placeholder that starts like ours but is not well formed is reported, not passed through."""
    with pytest.raises(TemplateError, match="malformed"):
        placeholders(text)
