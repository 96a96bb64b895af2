"""The ReasoningNER task protocol, shared by inference, data building, rewards and evaluation.

One package owns the format so it cannot drift between training and inference, one module per
job:

* ``schema``: ``Schema``, the entity types (optionally with definitions) as the model sees
  them, and the misc-like rule;
* ``prompt``: ``render_messages``, the single user turn of the paper (instruction, two notes,
  schema, output shape, text), ``render_prompt`` to apply a tokenizer's chat template, and the
  answer as the model should write it (``render_answer``, ``answer_json_schema``);
* ``thinking``: the think block's tags, where a reasoning pass stops, and loop detection;
* ``parse``: ``parse_completion``, reasoning + ``{"entities": {label: [mention, ...]}}`` out of
  whatever the model wrote, with every deviation recorded in ``ParsedCompletion.issues``;
  ``lenient_json`` is its JSON reader;
* ``metric``: ``normalize_mention`` and ``PRF``/``string_prf``, the paper's string-level metric;
* ``reference``: ``reference_answer``, a completion read exactly as the reference
  implementation reads it for that metric and its GRPO rewards (strict JSON, nothing repaired).

Everything is importable from ``spacy_reasoningner.protocol`` as before the split.
"""

from __future__ import annotations

from .lenient_json import (
    ISSUE_REPAIRED,
    ISSUE_TOO_LONG,
    ISSUE_TRUNCATED,
)
from .metric import (
    PRF,
    entity_set,
    normalize_mention,
    string_prf,
)
from .parse import (
    ISSUE_BAD_SHAPE,
    ISSUE_EMPTY,
    ISSUE_NO_ENTITIES_KEY,
    ISSUE_NO_JSON,
    ISSUE_NON_STRING,
    ISSUE_OUT_OF_SCHEMA,
    ISSUE_PROSE,
    ISSUE_UNCLOSED_THINK,
    REJECTED_NO_LABEL,
    REJECTED_NOT_A_STRING,
    ParsedCompletion,
    json_objects,
    parse_completion,
    reasoned_label,
    split_reasoning,
)
from .prompt import (
    DEFAULT_CHAT_TEMPLATE,
    MAX_MENTION_CHARS,
    MAX_MENTIONS_PER_LABEL,
    ChatMessages,
    FewShotExample,
    answer_json_schema,
    render_answer,
    render_completion,
    render_messages,
    render_prompt,
    render_user_turn,
    template_kwargs,
)
from .reference import (
    ReferenceAnswer,
    reference_answer,
)
from .schema import (
    MISC_LIKE_LABELS,
    Schema,
    is_misc_like,
    label_key,
)
from .thinking import (
    MIN_LOOP_LINE_CHARS,
    REASONING_STOPS,
    THINK_CLOSE,
    THINK_OPEN,
    mention_list_repeats,
    open_think_block,
    reasoning_loop_start,
    reasoning_text,
)

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ISSUE_BAD_SHAPE",
    "ISSUE_EMPTY",
    "ISSUE_NON_STRING",
    "ISSUE_NO_ENTITIES_KEY",
    "ISSUE_NO_JSON",
    "ISSUE_OUT_OF_SCHEMA",
    "ISSUE_PROSE",
    "ISSUE_REPAIRED",
    "ISSUE_TOO_LONG",
    "ISSUE_TRUNCATED",
    "ISSUE_UNCLOSED_THINK",
    "MAX_MENTIONS_PER_LABEL",
    "MAX_MENTION_CHARS",
    "MIN_LOOP_LINE_CHARS",
    "MISC_LIKE_LABELS",
    "PRF",
    "REASONING_STOPS",
    "REJECTED_NOT_A_STRING",
    "REJECTED_NO_LABEL",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ChatMessages",
    "FewShotExample",
    "ParsedCompletion",
    "ReferenceAnswer",
    "Schema",
    "answer_json_schema",
    "entity_set",
    "is_misc_like",
    "json_objects",
    "label_key",
    "mention_list_repeats",
    "normalize_mention",
    "open_think_block",
    "parse_completion",
    "reasoned_label",
    "reasoning_loop_start",
    "reasoning_text",
    "reference_answer",
    "render_answer",
    "render_completion",
    "render_messages",
    "render_prompt",
    "render_user_turn",
    "split_reasoning",
    "string_prf",
    "template_kwargs",
]
