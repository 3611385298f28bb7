"""Placeholder syntax: dotted and bracketed names, known fields only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.errors import TemplateError
from workers.templates import placeholders


def test_dotted_and_bracketed_placeholders() -> None:
    """Both forms are found, with any spacing, in order."""
    template = (
        "Authorization: {{ $.integrations.google_drive.token_type }} "
        "{{$.integrations[\"name-with-dash\"].access_token}} {{ $.integrations['x'].expires_at }}"
    )
    assert placeholders(template) == [
        ("google_drive", "token_type"),
        ("name-with-dash", "access_token"),
        ("x", "expires_at"),
    ]


def test_other_expressions_are_left_alone() -> None:
    """Placeholders of other engines ({{ $.steps... }}) are not ours."""
    assert placeholders("{{ $.steps.fetch.output }} plain text") == []


@pytest.mark.parametrize("field", ["refresh_token", "client_secret", "updated_at", "nope"])
def test_unknown_or_secret_fields_are_errors(field: str) -> None:
    """Only access_token, token_type, expires_at, scope and status may be read."""
    with pytest.raises(TemplateError, match=field):
        placeholders(f"{{{{ $.integrations.g.{field} }}}}")


@pytest.mark.parametrize(
    "text",
    ["{{ $.integrations.g }}", "{{ $.integrations[g].access_token }}", "{{ $.integrations.g.access_token.more }}"],
)
def test_malformed_placeholders_are_errors(text: str) -> None:
    """A placeholder that starts like ours but is not well formed is reported, not passed through."""
    with pytest.raises(TemplateError, match="malformed"):
        placeholders(text)


@given(st.text())
def test_any_text_either_parses_or_raises_template_error(text: str) -> None:
    """Whatever a template holds, parsing yields placeholders or a TemplateError, never another exception."""
    try:
        found = placeholders(text)
    except TemplateError as exc:
        assert str(exc)
    else:
        assert all(isinstance(name, str) and field for name, field in found)


@given(st.text().filter(lambda text: "$.integrations" not in text))
def test_text_without_placeholders_is_left_as_it_is(text: str) -> None:
    """A template with nothing of ours in it renders to itself, without touching Redis."""
    from workers.templates import render

    class NoRedis:
        def read_many(self, names):  # pragma: no cover -- must not be called
            raise AssertionError("no read expected")

    assert render(text, NoRedis()) == text  # type: ignore[arg-type]


@given(
    st.sampled_from(["access_token", "token_type", "expires_at", "scope", "status"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True),
    st.sampled_from(["'", '"']),
)
def test_every_valid_placeholder_form_is_found(field: str, name: str, quote: str) -> None:
    """Dotted and bracketed forms of any valid name and readable field parse to that pair."""
    assert placeholders(f"x {{{{ $.integrations.{name}.{field} }}}} y") == [(name, field)]
    assert placeholders(f"{{{{$.integrations[{quote}{name}{quote}].{field}}}}}") == [(name, field)]


@pytest.mark.parametrize("tail", ["", "}}"])
def test_a_megabyte_of_unclosed_placeholders_is_scanned_in_linear_time(tail: str) -> None:
    """1 MB of ``{{ $.integrations`` openings (closed once at the end, or never) parses or raises at once."""
    import time

    text = "{{ $.integrations" * (1_048_576 // 17) + tail
    started = time.perf_counter()
    try:
        found = placeholders(text)
    except TemplateError as error:
        assert len(str(error)) < 500  # the message quotes the start of the placeholder, not a megabyte
    else:
        assert found == []
    # Quadratic scanning took 1.3 s for 72 KB (about 4 minutes for this); linear takes milliseconds.
    assert time.perf_counter() - started < 1.0
