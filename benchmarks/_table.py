"""Print benchmark results as a two-column markdown table (pasted as is into the README)."""
from __future__ import annotations


def print_table(rows) -> None:
    width = max(len(key) for key, _ in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
