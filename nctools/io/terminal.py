"""Text from a file made safe to print on a terminal: metadata, class names and file names are the
input's, and an escape sequence among them (``ESC ] 0 ; title BEL`` retitles the terminal, others
move the cursor or rewrite what was printed) must be shown, not obeyed.

>>> print(escape_control("cifar\\x1b]0;owned\\x07 r100\\tok"))
cifar\\x1b]0;owned\\x07 r100\\tok
"""
from __future__ import annotations

import re

__all__ = ["escape_control"]

# C0 controls (tab and newline included: one printed field stays one line), DEL, the C1 controls
# (U+0080..U+009F: CSI and OSC have one-character forms there), and the bidirectional overrides that
# reorder what a line appears to say.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_control(text) -> str:
    """``str(text)`` with every control character written as a Python escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
