"""Names and messages as the package prints them: on one line, no name able to forge one."""

from __future__ import annotations

import os


def shown(name) -> str:
    """A path or file name as printed: as it is when every character is printable and it
    neither starts with a quote nor starts or ends with a space, else its Python ``repr``
    (quoted, a newline shown as ``\\n``), so that no name can break a line, forge one, or send
    terminal control codes; a quoted name is always a ``repr``."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    if text and text.isprintable() and text[0] not in "'\"" and text == text.strip():
        return text
    return repr(text)


def printable(text) -> str:
    """A message (an error read from a manifest) on one line of printable characters: each
    other character escaped as ``repr`` does."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def one_line(error: BaseException) -> str:
    """An exception as one line: its message (with its type unless it is a plain
    ValueError / OSError, whose messages are written for users).

    Args:
        error: any exception.

    Returns:
        The line, its whitespace runs (newlines included) as single spaces.
    """
    message = " ".join(str(error).split())
    if message and isinstance(error, (ValueError, OSError)):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
