"""Grounded answers: a grammar of the answer whose mentions can only be spans of the text.

A small model constrained to the protocol's JSON shape still names things that are not in
the text (a third of its mentions, on unseen domains). Constraining every mention string to
the text's own word sequences removes that failure at the source: the decoder cannot write a
mention that grounding would not find.

A span is a contiguous run of the text's tokens (``\\w+`` runs and single other characters,
with the exact characters between them) that starts on a word and ends on a word or on a
full stop attached to one (``Inc.``, ``U.S.``). The answer is the protocol's JSON as
``render_answer`` writes it (``{"entities": {"<type>": ["<mention>", ...], ...}}``, types in
schema order, each at most once, at most ``MAX_MENTIONS_PER_LABEL`` mentions each, and no
more mentions per type than the text has words a mention can start on: a model that repeats
itself in its answer stops at that bound, not at the answer's token budget; the local
backends close the list at its first repeat, ``backends.repeat_guard``).

Why a grammar and not a JSON Schema: listing the spans (an ``enum``) makes the constraint
grow with the square of the text and xgrammar's compilation with it (about 3 s for a
200-character sentence, minutes for a 2,000-character window, see bench/grounded_answers.py).
In the grammar each token of the text appears once: span ``i`` is token ``i`` optionally
followed by its separator and span ``i + 1``, so the grammar grows linearly and compiles in
milliseconds. xgrammar (transformers backend) and vLLM's structured outputs both take it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .protocol import MAX_MENTION_CHARS, MAX_MENTIONS_PER_LABEL, Schema

_TOKEN = re.compile(r"\w+|[^\w\s]")


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _ebnf(text: str) -> str:
    """An EBNF string literal matching ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    """An EBNF string literal matching ``text`` as it appears inside a JSON string."""
    return _ebnf(json.dumps(text, ensure_ascii=False)[1:-1])


def _span_rules(text: str) -> tuple[list[str], list[str]]:
    """Rules ``s<i>`` (every span starting at token ``i``) and the names of those that a
    mention may start with."""
    tokens = list(_TOKEN.finditer(text))
    # Which tokens a span may end on: words, and full stops attached to the token before.
    ends = [
        _is_word(t.group()) or (i > 0 and t.group() == "." and tokens[i - 1].end() == t.start())
        for i, t in enumerate(tokens)
    ]
    rules: list[str] = []
    # Built from the last token back: span i continues with span i + 1 only if that one
    # can end somewhere (has_rule[i + 1]).
    has_rule = [False] * (len(tokens) + 1)
    for i in range(len(tokens) - 1, -1, -1):
        token = tokens[i]
        alternatives = [_literal(token.group())] if ends[i] else []
        if has_rule[i + 1]:
            gap = text[token.end() : tokens[i + 1].start()]
            alternatives.append(f"{_literal(token.group() + gap)} s{i + 1}")
        if alternatives:
            has_rule[i] = True
            rules.append(f"s{i} ::= " + " | ".join(alternatives))
    starts = [f"s{i}" for i, t in enumerate(tokens) if _is_word(t.group()) and has_rule[i]]
    return rules[::-1], starts


def grounded_answer_grammar(
    schema: Schema, text: str, max_items: int = MAX_MENTIONS_PER_LABEL
) -> str:
    """The answer grammar of ``schema`` about ``text`` in xgrammar's EBNF notation (root rule
    ``root``): every mention a span of ``text``.

    A text without any word allows only ``{"entities": {}}``.
    """
    span_rules, starts = _span_rules(text)
    if not starts:
        return "\n".join([_ROOT, 'entities ::= ""']) + "\n"
    # Distinct mentions of one type start on distinct words (nested ones of the same type
    # aside), so a longer list can only repeat itself.
    mention = 'mention ::= "\\"" (' + " | ".join(starts) + ') "\\""'
    rules = _answer_rules(schema.prompt_names, min(max_items, len(starts)), mention)
    return "\n".join(rules + span_rules) + "\n"


def schema_answer_grammar(answer_schema: Mapping[str, Any]) -> str:
    """The grammar of an answer schema written by ``protocol.answer_json_schema``, in the same
    notation (which llama.cpp's GBNF also reads): its types in order, at most ``maxItems``
    mentions of at most ``maxLength`` characters each, any JSON string content. For servers
    that take a grammar but not a JSON Schema."""
    entities = answer_schema["properties"]["entities"]["properties"]
    names = list(entities)
    mentions = entities[names[0]] if names else {}
    max_items = mentions.get("maxItems", MAX_MENTIONS_PER_LABEL)
    max_chars = mentions.get("items", {}).get("maxLength", MAX_MENTION_CHARS)
    if not names:
        return "\n".join([_ROOT, 'entities ::= ""']) + "\n"
    rules = _answer_rules(names, max_items, f'mention ::= "\\"" char{{1,{max_chars}}} "\\""')
    rules.append(r'char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})')
    return "\n".join(rules) + "\n"


_ROOT = 'root ::= "{\\"entities\\": {" entities "}}"'


def _answer_rules(names: Sequence[str], max_items: int, mention_rule: str) -> list[str]:
    """The rules of the answer's shape as ``render_answer`` writes it (types in schema order,
    each at most once, at most ``max_items`` mentions each), mentions by ``mention_rule``."""
    rules = [_ROOT]
    # Types in schema order, each at most once: after type i, any later type may follow.
    for i, name in enumerate(names):
        later = " | ".join(f"t{j}" for j in range(i + 1, len(names)))
        tail = f' ("{", "}" ({later}))?' if later else ""
        rules.append(f't{i} ::= {_ebnf(json.dumps(name, ensure_ascii=False))} ": " list{tail}')
    rules.append("entities ::= (" + " | ".join(f"t{i}" for i in range(len(names))) + ")?")
    rules.append(f'list ::= "[" (mention (", " mention){{0,{max_items - 1}}})? "]"')
    rules.append(mention_rule)
    return rules
