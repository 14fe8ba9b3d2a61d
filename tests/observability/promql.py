"""Metric names in PromQL expressions and the PromQL targets of Grafana dashboards, for the
tests that hold alerts and dashboards to what the code and the exporters really export.

A tokenizer, not a parser: label matchers, ranges, label lists (``by (...)``), strings and
Grafana variables are removed, then every identifier that is not a call or a keyword is a
metric name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

#: PromQL words that look like series selectors: keywords, binary set operators, modifiers.
PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "atan2",
    ]
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
# A whole identifier (no backtracking into a shorter one), not part of a number or a
# variable, and not followed by "(" (a function or aggregation call).
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana variables allowed)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _VARIABLE, _LABEL_LIST):
        text = pattern.sub(" ", text)
    names.update(n for n in _IDENT.findall(text) if n not in PROMQL_WORDS)
    return names


def dashboard_exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every Prometheus target, rows' nested panels included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("type", "prometheus") == "prometheus" and target.get("expr"):
                    yield panel.get("title", "?"), target["expr"]

    yield from walk(board.get("panels", []))
