"""A completion read exactly as the reference implementation reads it for its metric and
GRPO rewards (strict JSON, nothing repaired)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

# The reference's regular expressions, read in linear time: it applies r"<think>.*?</think>"
# (removed), r"<answer>(.*?)</answer>" and r"```json(.*?)```" (first match) with DOTALL,
# which rescan the rest of the text from every unclosed opening tag.


def _first_between(text: str, opening: str, closing: str) -> str | None:
    """The first match of ``opening(.*?)closing``, or None. If the first opening tag has no
    closing one after it, no later one has: there is no match."""
    start = text.find(opening)
    if start < 0:
        return None
    end = text.find(closing, start + len(opening))
    return None if end < 0 else text[start + len(opening) : end]


def _without_blocks(text: str, opening: str, closing: str) -> str:
    """``text`` with every match of ``opening.*?closing`` removed."""
    parts, position = [], 0
    while (start := text.find(opening, position)) >= 0:
        end = text.find(closing, start + len(opening))
        if end < 0:
            break
        parts.append(text[position:start])
        position = end + len(closing)
    parts.append(text[position:])
    return "".join(parts)


@dataclass(frozen=True)
class ReferenceAnswer:
    """A completion as the reference implementation (HuiResearch/ReasoningIE) reads it for
    its string-level metric and its GRPO rewards.

    ``loads``: ``json.loads`` accepted the answer text (think blocks removed, an
    ``<answer>`` block or a json fence taken when present); prose around it, single quotes,
    trailing commas or a cut answer fail, and nothing is repaired. ``readable``: reading the
    entities from the value raised nothing in the reference either (``entities`` is not an
    object, or a label holds a number, make the reference fail: no credit at all).
    ``mentions``: (mention, label) pairs, mentions stripped, labels lowercased and
    stripped, in the order written; only string items count.
    """

    loads: bool
    readable: bool
    mentions: tuple[tuple[str, str], ...] = ()

    def in_schema(self, names: Iterable[str]) -> bool:
        """The reference's schema check: the answer loads and every label is a schema name
        (compared lowercased and stripped); an answer without entities passes."""
        allowed = {name.strip().lower() for name in names}
        return self.loads and self.readable and all(label in allowed for _, label in self.mentions)


def reference_answer(completion: str) -> ReferenceAnswer:
    """Read ``completion`` exactly as the reference does (see ``ReferenceAnswer``)."""
    text = completion
    if "<think>" in text or "</think>" in text:
        text = _without_blocks(text, "<think>", "</think>")
        text = text.replace("<think>", "").replace("</think>", "")
    if "<answer>" in text:
        block = _first_between(text, "<answer>", "</answer>")
        text = block if block is not None else text.replace("<answer>", "").replace("</answer>", "")
    if "```json" in text:
        fenced = _first_between(text, "```json", "```")
        if fenced is None:  # an unclosed fence: the reference fails on it
            return ReferenceAnswer(loads=False, readable=False)
        text = fenced
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):  # the reference fails on these too (nesting: deep)
        return ReferenceAnswer(loads=False, readable=False)
    if not isinstance(value, dict):
        return ReferenceAnswer(loads=True, readable=True)  # read as no entities
    entities = value.get("entities", {})
    if not isinstance(entities, dict):
        return ReferenceAnswer(loads=True, readable=False)
    mentions = []
    for label, items in entities.items():
        # The reference iterates whatever a label holds: list items, the characters of a
        # string, the keys of an object; a number, true/false or null raise.
        if not isinstance(items, (list, str, dict)):
            return ReferenceAnswer(loads=True, readable=False)
        label_name = label.strip().lower()
        mentions.extend((item.strip(), label_name) for item in items if isinstance(item, str))
    return ReferenceAnswer(loads=True, readable=True, mentions=tuple(mentions))
