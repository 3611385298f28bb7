"""Filling ``{{ $.integrations.NAME.FIELD }}`` placeholders from the stored tokens.

All integrations a template names are read in one Redis round trip. An unknown
integration or field is an error that names it, never an empty string. Other
``{{ ... }}`` expressions are left for whatever engine owns them.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Split ``template`` into literal text and (name, field) placeholders, checked once and cached.

    Workflow runners render the same few templates over and over; parsing each once
    keeps a render close to the cost of its one Redis round trip.
    """
    literals: list[str] = []
    found: list[tuple[str, str]] = []
    position = 0
    for match in _ANY_INTEGRATION.finditer(template):
        exact = _PLACEHOLDER.fullmatch(match.group(0))
        if exact is None:
            raise TemplateError(f"malformed placeholder {match.group(0)!r}: "
                                "use {{ $.integrations.NAME.FIELD }} or {{ $.integrations[\"NAME\"].FIELD }}")
        field = exact.group("field")
        if field not in READABLE_FIELDS:
            raise TemplateError(
                f"unknown field {field!r} in {match.group(0)!r}; fields are {', '.join(READABLE_FIELDS)}"
            )
        literals.append(template[position:match.start()])
        found.append((exact.group("dotted") or exact.group("quoted"), field))
        position = match.end()
    literals.append(template[position:])
    return tuple(literals), tuple(found)


def placeholders(template: str) -> list[tuple[str, str]]:
    """The (name, field) pairs ``template`` refers to, in order; malformed ones raise."""
    return list(_compile(template)[1])


def render(template: str, reader: TokenReader) -> str:
    literals, wanted = _compile(template)
    if not wanted:
        return template
    stored = reader.read_raw_many(name for name, _ in wanted)
    missing = sorted(name for name, fields in stored.items() if fields is None)
    if missing:
        raise TemplateError(f"unknown integration(s) in template: {', '.join(missing)}")
    parts = [literals[0]]
    for (name, field), literal in zip(wanted, literals[1:], strict=True):
        parts.append(stored[name].get(field, ""))  # type: ignore[union-attr]
        parts.append(literal)
    return "".join(parts)
