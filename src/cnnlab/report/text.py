"""Markdown text helpers: a table, a row of one, a counted noun."""

from __future__ import annotations


def table_row(cells: list[str]) -> str:
    """One Markdown table row ('|' inside a cell would split it, so it becomes '/')."""
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([table_row(header), "|" + "---|" * len(header), *(table_row(r) for r in rows)])


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
