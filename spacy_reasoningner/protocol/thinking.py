"""The think block: its tags, where a reasoning pass stops, opening and closing it, and
the loops small models fall into (in the reasoning, and in an answer's mention list)."""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Where a reasoning pass stops: at the close tag, or already at a line that opens a closing
# tag, which in a think block is the close tag being written (its last tokens are not worth
# a forward pass each; the answer pass writes the tag whole).
REASONING_STOPS = (THINK_CLOSE, "\n</")
# A reasoning line this long that repeats an earlier one is a loop, not an argument: a small
# model that writes '"Caldicott" is a person.' a second time writes it a tenth time.
MIN_LOOP_LINE_CHARS = 12


def reasoning_loop_start(reasoning: str) -> int | None:
    """Offset of the first line of ``reasoning`` that repeats an earlier line (compared
    stripped, at least ``MIN_LOOP_LINE_CHARS`` characters), or None when no line repeats."""
    seen: set[str] = set()
    offset = 0
    for line in reasoning.splitlines(keepends=True):
        key = line.strip()
        if len(key) >= MIN_LOOP_LINE_CHARS:
            if key in seen:
                return offset
            seen.add(key)
        offset += len(line)
    return None


_ANSWER_ITEM = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\],]')


def mention_list_repeats(answer: str) -> bool:
    """Whether the last mention list of a (partial) JSON answer goes on, with a comma, after
    a mention it already holds: how an answer loop starts ("Humane", "Humane", ...). A
    repeated mention adds nothing to a set of mentions, so decoding may close the list there."""
    items: list[str] | None = None  # the mentions of the open list, None outside lists
    for match in _ANSWER_ITEM.finditer(answer):
        item = match.group()
        if item == "[":
            items = []
        elif item == "]":
            items = None
        elif items is None:
            continue
        elif item == ",":
            if items and items[-1] in items[:-1]:
                return True
        else:
            items.append(item)
    return False


def open_think_block(prompt: str) -> str:
    """A rendered prompt with the think block opened (``<think>`` and a newline), as the
    protocol's completions begin, so that a reasoning pass does not spend forward passes
    writing the tag; a prompt whose chat template already opened it is only completed."""
    if prompt.endswith(THINK_OPEN + "\n"):
        return prompt
    return prompt + ("\n" if prompt.endswith(THINK_OPEN) else THINK_OPEN + "\n")


def reasoning_text(thought: str, *, stop_loops: bool) -> str:
    """A reasoning pass's text without its think tags, cut before its first repeated line
    when ``stop_loops``: the reasoning that the answer pass continues and that is returned."""
    thought = thought.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
    if stop_loops and (loop := reasoning_loop_start(thought)) is not None:
        thought = thought[:loop]
    return thought.strip()
