"""Filling ``{{ $.integrations.NAME.FIELD }}`` placeholders from the stored tokens.

All integrations a template names are read in one Redis round trip. An unknown
integration or field is an error that names it, never an empty string. Other
``{{ ... }}`` expressions are left for whatever engine owns them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

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
_OPENING = re.compile(r"\{\{\s*\$\.integrations\b")
_CLOSING = "}}"


def _candidates(template: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each ``{{ $.integrations … }}``, in one pass.

    A lazy ``.*?}}`` regex rescans to the end of the text from every unclosed
    opening (quadratic: 72 KB of them took a second); here an opening with no
    ``}}`` after it ends the scan, since no later one can be closed either.
    """
    position = 0
    while (opening := _OPENING.search(template, position)) is not None:
        end = template.find(_CLOSING, opening.end())
        if end < 0:
            return
        yield opening.start(), end + len(_CLOSING)
        position = end + len(_CLOSING)


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Split ``template`` into literal text and (name, field) placeholders, checked once and cached.

    Workflow runners render the same few templates over and over; parsing each once
    keeps a render close to the cost of its one Redis round trip.
    """
    literals: list[str] = []
    found: list[tuple[str, str]] = []
    position = 0
    for start, end in _candidates(template):
        text = template[start:end]
        exact = _PLACEHOLDER.fullmatch(text)
        if exact is None:
            raise TemplateError(
                f"malformed placeholder {_shown(text)}: "
                'use {{ $.integrations.NAME.FIELD }} or {{ $.integrations["NAME"].FIELD }}'
            )
        field = exact.group("field")
        if field not in READABLE_FIELDS:
            raise TemplateError(f"unknown field {field!r} in {_shown(text)}; fields are {', '.join(READABLE_FIELDS)}")
        literals.append(template[position:start])
        found.append((exact.group("dotted") or exact.group("quoted"), field))
        position = end
    literals.append(template[position:])
    return tuple(literals), tuple(found)


def _shown(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


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
