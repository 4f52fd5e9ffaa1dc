"""How the report writes a number in a table cell ("-" where there is none)."""

from __future__ import annotations


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f} pp"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _device(facts: dict) -> str:
    """Where a model trained, and in bfloat16 when its `precision` chose mixed precision there."""
    device = facts.get("device", "-")
    return f"{device}, bf16" if facts.get("compute_dtype") == "mixed_bfloat16" else device
