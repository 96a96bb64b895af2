"""The prompt of the protocol: the paper's single user turn, few-shot examples, the chat
template, and the answer as the model should write it (JSON and its JSON Schema)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schema import Schema
from .thinking import THINK_CLOSE, THINK_OPEN

ChatMessages = list[dict[str, str]]

# ChatML, used for models that ship without a chat template (training uses the same one).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


_INSTRUCTION = (
    "Extract the named entities of the types listed in the schema from the text below "
    "and return them as JSON."
)
_NOTES = (
    "Notes:\n"
    "1. The schema lists the entity types to extract.\n"
    "2. Only extract entities whose type is in the schema."
)
_OUTPUT_SHAPE = (
    'Output format: {"entities": {"<type>": ["<mention>", ...], ...}}, with each mention '
    'copied exactly from the text; answer {"entities": {}} if there is none.'
)
_THINK_FIRST = (
    "First reason step by step inside <think> </think> about each candidate mention and its "
    "type, then give the JSON."
)
_ANSWER_DIRECTLY = "Answer with the JSON only."


def render_user_turn(
    text: str,
    schema: Schema,
    *,
    reasoning: bool = True,
    instruction: str | None = None,
    reasoning_instruction: bool = True,
) -> str:
    """The user turn in the paper's structure: instruction, notes, schema, output shape, text.

    ``instruction`` replaces the paper's first sentence (the rest is the protocol).
    ``reasoning_instruction`` adds our line before the text: reason inside a think block first
    (or, without ``reasoning``, answer with the JSON only). The reference's prompt has no such
    line; its models learn to reason from their training targets."""
    parts = [instruction or _INSTRUCTION, _NOTES, "Schema: " + schema.schema_json]
    if schema.definitions:
        lines = [f"- {schema.prompt_name(k)}: {v}" for k, v in schema.definitions.items()]
        parts.append("Type definitions:\n" + "\n".join(lines))
    parts.append(_OUTPUT_SHAPE)
    if reasoning_instruction:
        parts.append(_THINK_FIRST if reasoning else _ANSWER_DIRECTLY)
    parts.append("Text: " + text)
    return "\n".join(parts)


@dataclass(frozen=True)
class FewShotExample:
    """A worked example, shown to the model as an earlier exchange: the user turn about
    ``text``, then the answer with ``entities`` (label -> mentions), after ``reasoning`` when
    it is given and the prompt asks for reasoning."""

    text: str
    entities: Mapping[str, tuple[str, ...]]
    reasoning: str | None = None

    @classmethod
    def from_config(cls, value: Any, schema: Schema, number: int = 1) -> FewShotExample:
        """Validate one ``examples`` item: ``{"text": ..., "entities": {label: [mention,
        ...]}, "reasoning": ...}`` (reasoning optional), labels of the schema, every mention
        in the text."""
        where = f"example {number}"
        shape = '{"text": "...", "entities": {"<label>": ["<mention>", ...]}, "reasoning": "..."}'
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be an object {shape}, got {type(value).__name__}")
        unknown = sorted(set(value) - {"text", "entities", "reasoning"})
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}: use {shape}")
        text, entities, reasoning = value.get("text"), value.get("entities"), value.get("reasoning")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where} needs a non-empty text: {shape}")
        if not isinstance(entities, Mapping):
            raise ValueError(f"{where} needs entities as an object label -> mentions: {shape}")
        if reasoning is not None and not isinstance(reasoning, str):
            raise ValueError(f"{where}: reasoning must be text")
        grouped: dict[str, tuple[str, ...]] = {}
        for label, mentions in entities.items():
            canonical = schema.canonical(str(label))
            if canonical is None:
                raise ValueError(
                    f"{where}: label {label!r} is not one of the labels {list(schema.labels)}"
                )
            if isinstance(mentions, str) or not isinstance(mentions, Sequence):
                raise ValueError(f"{where}: the mentions of {label!r} must be a list of strings")
            for mention in mentions:
                if not isinstance(mention, str) or mention not in text:
                    raise ValueError(
                        f"{where}: mention {mention!r} of {label!r} is not in the example's text"
                    )
            grouped[canonical] = tuple(mentions)
        return cls(text, grouped, reasoning.strip() if reasoning else None)

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "text": self.text,
            "entities": {k: list(v) for k, v in self.entities.items()},
        }
        if self.reasoning:
            config["reasoning"] = self.reasoning
        return config


def render_messages(
    text: str,
    schema: Schema,
    *,
    reasoning: bool = True,
    examples: Sequence[FewShotExample] = (),
    instruction: str | None = None,
    reasoning_instruction: bool = True,
) -> ChatMessages:
    """A single user turn and no system turn, as in the reference implementation; few-shot
    ``examples`` come first as earlier user/assistant exchanges."""
    options = dict(
        reasoning=reasoning, instruction=instruction, reasoning_instruction=reasoning_instruction
    )
    messages: ChatMessages = []
    for example in examples:
        user = render_user_turn(example.text, schema, **options)
        thought = example.reasoning if reasoning else None
        answer = render_completion(thought, render_answer(example.entities, schema))
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    turn = render_user_turn(text, schema, **options)
    messages.append({"role": "user", "content": turn})
    return messages


def template_kwargs(kwargs: Mapping[str, Any], *, reasoning: bool) -> dict[str, Any]:
    """Chat-template arguments for a prompt with or without reasoning: without, Qwen3-style
    templates get ``enable_thinking=False`` (they then open an empty think block); a value
    the user set wins."""
    result = dict(kwargs)
    if not reasoning:
        result.setdefault("enable_thinking", False)
    return result


def render_prompt(
    tokenizer: Any, messages: ChatMessages, *, reasoning: bool = True, **kwargs: Any
) -> str:
    """Apply the tokenizer's chat template (ChatML when the tokenizer has none)."""
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=True,
        chat_template=template,
        **template_kwargs(kwargs, reasoning=reasoning),
    )


def render_answer(entities: Mapping[str, Iterable[str]], schema: Schema) -> str:
    """The JSON answer of the protocol, labels as the model sees them (for training targets),
    in the schema's order (``prompt_names``), which constrained decoding enforces: a model
    trained on another order could not write its later labels under the constraint."""
    grouped = {schema.prompt_name(label): list(dict.fromkeys(m)) for label, m in entities.items()}
    rank = {name: i for i, name in enumerate(schema.prompt_names)}
    ordered = sorted(grouped, key=lambda name: rank.get(name, len(rank)))  # stable
    return json.dumps(
        {"entities": {name: grouped[name] for name in ordered if grouped[name]}},
        ensure_ascii=False,
    )


MAX_MENTION_CHARS = 100
MAX_MENTIONS_PER_LABEL = 32


def answer_json_schema(schema: Schema) -> dict[str, Any]:
    """JSON Schema of the answer object, labels restricted to the schema's prompt names; for
    constrained decoding, so that a constrained answer always parses and stays in schema.
    Mentions are bounded in length and number, so that a looping model cannot fill its budget
    with one endless mention or list (small models do both when constrained)."""
    mentions = {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_MENTION_CHARS},
        "maxItems": MAX_MENTIONS_PER_LABEL,
    }
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "object",
                "properties": {name: mentions for name in schema.prompt_names},
                "additionalProperties": False,
            }
        },
        "required": ["entities"],
        "additionalProperties": False,
    }


def render_completion(reasoning: str | None, answer: str) -> str:
    """Think block (when there is reasoning) followed by the JSON answer."""
    if reasoning is None:
        return answer
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n{answer}"
