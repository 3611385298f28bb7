"""Filling ``{{ $.integrations.NAME.FIELD }}`` placeholders from the stored tokens.

All integrations a template names are read in one Redis round trip. An unknown
integration or field is an error that names it, never an empty string. Other
``{{ ... }}`` expressions are left for whatever engine owns them.
"""

from __future__ import annotations

import re

from workers.consumer import READABLE_FIELDS, TokenReader
from workers.errors import TemplateError

_PLACEHOLDER = re.compile(
    r"""\{\{\s*\$\.integrations
        (?: \.(?P<dotted>[A-Za-z][A-Za-z0-9_-]*)
          | \[\s*(?P<quote>["'])(?P<quoted>[^"'\]]*)(?P=quote)\s*\] )
        \.(?P<field>[A-Za-z_][A-Za-z0-9_]*)
        \s*\}\}""",
    re.VERBOSE,
)
_ANY_INTEGRATION = re.compile(r"\{\{\s*\$\.integrations\b.*?\}\}", re.DOTALL)


def placeholders(template: str) -> list[tuple[str, str]]:
    """The (name, field) pairs ``template`` refers to, in order; malformed ones raise."""
    found: list[tuple[str, str]] = []
    for match in _ANY_INTEGRATION.finditer(template):
        exact = _PLACEHOLDER.fullmatch(match.group(0))
        if exact is None:
            raise TemplateError(f"malformed placeholder {match.group(0)!r}: "
                                "use {{ $.integrations.NAME.FIELD }} or {{ $.integrations[\"NAME\"].FIELD }}")
        name = exact.group("dotted") or exact.group("quoted")
        field = exact.group("field")
        if field not in READABLE_FIELDS:
            raise TemplateError(
                f"unknown field {field!r} in {match.group(0)!r}; fields are {', '.join(READABLE_FIELDS)}"
            )
        found.append((name, field))
    return found


def render(template: str, reader: TokenReader) -> str:
    wanted = placeholders(template)
    if not wanted:
        return template
    tokens = reader.read_many(name for name, _ in wanted)
    missing = sorted({name for name, token in tokens.items() if token is None})
    if missing:
        raise TemplateError(f"unknown integration(s) in template: {', '.join(missing)}")

    def fill(match: re.Match[str]) -> str:
        exact = _PLACEHOLDER.fullmatch(match.group(0))
        assert exact is not None  # checked by placeholders()
        token = tokens[exact.group("dotted") or exact.group("quoted")]
        value = getattr(token, exact.group("field"))
        if isinstance(value, float):
            return str(int(value))
        return "" if value is None else str(value)

    return _ANY_INTEGRATION.sub(fill, template)
