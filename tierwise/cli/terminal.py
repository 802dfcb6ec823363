"""Text from outside (model answers, provider errors, stored runs) made safe to print.

A model's answer is data, not instructions for the terminal: an ``ESC[2J`` in it must not
clear the screen, an ``ESC]0;`` must not retitle the window, and ``[link=...]`` must not
become a live hyperlink nor a stray ``[/]`` crash rich's markup parser. Every command
prints such text through :func:`shown` (for rich markup) or :func:`safe` (plain text).
"""

from __future__ import annotations

import re

from rich.markup import escape

__all__ = ["safe", "shown"]

# C0 controls but tab and newline, DEL, C1 controls (a lone 0x9b is a CSI on some
# terminals), and the bidi overrides that make text read differently from what it holds.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    r"""``text`` with control characters shown as ``\x1b``-style escapes (tab, newline kept)."""
    return _CONTROL.sub(_visible, text)


def shown(text: object) -> str:
    """``text`` (any value, as ``str``) for rich markup: controls escaped, markup neutralised."""
    return escape(safe(str(text)))
