"""The metric names a PromQL expression selects, for checking alert rules and dashboards against /metrics.

A small reading of PromQL rather than a parser: strings, label matchers, ranges and grouping label lists
are taken out first (label names there are not metrics), then every bare identifier that is not a function
call, a keyword or part of a number or duration is a metric name. tests/unit/test_monitoring.py pins it on
the constructs the rules and the dashboard use.
"""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_TOKENS = re.compile(
    r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?"
    r"|(?P<variable>\$\{?\w+\}?)"
)
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan"}
)


def metric_names(expression: str) -> set[str]:
    """Every metric an expression selects by name (``{__name__=…}`` selectors are not read)."""
    text = _STRINGS.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    # A grouping list may follow its aggregation (sum(x) by (le)) or come first (sum by (le) (x)).
    text = _GROUPING.sub("", text)
    names = set()
    for token in _TOKENS.finditer(text):
        name = token.group("name")
        if name and not token.group("call") and name.lower() not in _KEYWORDS:
            names.add(name)
    return names
