"""The ReasoningNER task protocol, shared by inference, data building, rewards and evaluation.

One module owns the format so it cannot drift between training and inference:

* ``Schema``: the entity types (optionally with definitions) as the model sees them;
* ``render_messages``: the single user turn of the paper (instruction, two notes, schema,
  output shape, text), plus ``render_prompt`` to apply a tokenizer's chat template;
* ``parse_completion``: reasoning + ``{"entities": {label: [mention, ...]}}`` out of whatever
  the model wrote, tolerant of the usual ways small models get it wrong, with every deviation
  recorded in ``ParsedCompletion.issues``;
* ``normalize_mention`` and ``PRF``/``string_prf``: the paper's string-level metric.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ChatMessages = list[dict[str, str]]

# Type names that the reference drops from the schema and from gold ("misc-like"), plus
# "miscellaneous", the same type under the natural naming of the labels.json files. The one
# list: training profiles and the benchmark code import it (see ``is_misc_like``).
MISC_LIKE_LABELS = frozenset({"na", "n a", "misc", "miscellaneous", "else", "other", "nan"})

# ChatML, used for models that ship without a chat template (training uses the same one).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def label_key(label: str) -> str:
    """The form under which a label is compared: case, spacing and underscores do not matter."""
    return " ".join(label.replace("_", " ").split()).lower()


def is_misc_like(label: str) -> bool:
    """True for the catch-all types the reference leaves out of schemas and gold
    (``MISC_LIKE_LABELS``, compared as ``label_key``); the one rule every stage imports."""
    return label_key(label) in MISC_LIKE_LABELS


@dataclass(frozen=True)
class Schema:
    """Entity types in the order given, with optional definitions.

    ``labels`` keep the user's spelling (they become ``Span.label_``); ``prompt_names`` is what
    the model sees: lowercased and sorted as in the reference when ``lowercase`` is set, and
    ``schema_json`` their rendering in the prompt.
    """

    labels: tuple[str, ...]
    definitions: Mapping[str, str] = field(default_factory=dict)
    lowercase: bool = True
    prompt_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    schema_json: str = field(init=False, repr=False, compare=False)
    _by_key: dict[str, str] = field(init=False, repr=False, compare=False)
    _canonical_memo: dict[str, str | None] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, labels: Any, *, lowercase: bool = True) -> Schema:
        """Validate ``labels`` (a list of names or a mapping name -> definition)."""
        hint = 'use e.g. labels = ["person", "location"] or {"person": "a human being"}'
        if isinstance(labels, Mapping):
            names, definitions = list(labels.keys()), dict(labels)
        elif isinstance(labels, Sequence) and not isinstance(labels, str):
            names, definitions = list(labels), {}
        else:
            raise ValueError(
                f"labels must be a list of names or a mapping name -> definition, "
                f"got {type(labels).__name__}: {hint}"
            )
        if not names:
            raise ValueError(f"labels is empty: give at least one entity type ({hint})")
        seen: dict[str, str] = {}
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"label {name!r} is not a non-empty string: {hint}")
            key = label_key(name)
            if key in seen:
                raise ValueError(
                    f"labels {seen[key]!r} and {name!r} are duplicates (labels are compared "
                    "ignoring case, spaces and underscores): keep one of them"
                )
            seen[key] = name
        for name, definition in definitions.items():
            if not isinstance(definition, str):
                raise ValueError(
                    f"the definition of label {name!r} must be a string, "
                    f"got {type(definition).__name__}: write it as text or use a list of labels"
                )
        clean = {k: " ".join(v.split()) for k, v in definitions.items() if v.strip()}
        return cls(labels=tuple(names), definitions=clean, lowercase=lowercase)

    def to_config(self) -> list[str] | dict[str, str]:
        """The ``labels`` config value this schema was built from (definitions included)."""
        if not self.definitions:
            return list(self.labels)
        return {label: self.definitions.get(label, "") for label in self.labels}

    def __post_init__(self) -> None:
        # Derived once from the immutable fields: rendering and parsing run per document.
        names = [self.prompt_name(label) for label in self.labels]
        derived = {
            "prompt_names": tuple(sorted(names) if self.lowercase else names),
            "_by_key": {label_key(label): label for label in self.labels},
            "_canonical_memo": {},
        }
        derived["schema_json"] = json.dumps(list(derived["prompt_names"]), ensure_ascii=False)
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def prompt_name(self, label: str) -> str:
        return label_key(label) if self.lowercase else label.strip()

    def canonical(self, model_label: str) -> str | None:
        """Map a label the model wrote back to the configured label, or None if not in schema."""
        # Memoized per spelling (bounded: model output is open-ended); answers repeat labels.
        memo = self._canonical_memo
        if model_label not in memo:
            if len(memo) >= 4096:
                return self._by_key.get(label_key(model_label))
            memo[model_label] = self._by_key.get(label_key(model_label))
        return memo[model_label]


# --------------------------------------------------------------------------- rendering

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
    text: str, schema: Schema, *, reasoning: bool = True, instruction: str | None = None
) -> str:
    """The user turn in the paper's structure: instruction, notes, schema, output shape, text.
    ``instruction`` replaces the paper's first sentence (the rest is the protocol)."""
    parts = [instruction or _INSTRUCTION, _NOTES, "Schema: " + schema.schema_json]
    if schema.definitions:
        lines = [f"- {schema.prompt_name(k)}: {v}" for k, v in schema.definitions.items()]
        parts.append("Type definitions:\n" + "\n".join(lines))
    parts.append(_OUTPUT_SHAPE)
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
) -> ChatMessages:
    """A single user turn and no system turn, as in the reference implementation; few-shot
    ``examples`` come first as earlier user/assistant exchanges."""
    messages: ChatMessages = []
    for example in examples:
        user = render_user_turn(example.text, schema, reasoning=reasoning, instruction=instruction)
        thought = example.reasoning if reasoning else None
        answer = render_completion(thought, render_answer(example.entities, schema))
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    turn = render_user_turn(text, schema, reasoning=reasoning, instruction=instruction)
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
    """The JSON answer of the protocol, labels as the model sees them (for training targets)."""
    grouped = {schema.prompt_name(label): list(dict.fromkeys(m)) for label, m in entities.items()}
    return json.dumps({"entities": {k: v for k, v in grouped.items() if v}}, ensure_ascii=False)


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


# --------------------------------------------------------------------------- parsing

ISSUE_EMPTY = "empty output"
ISSUE_UNCLOSED_THINK = "unclosed think block"
ISSUE_NO_JSON = "no JSON object in the answer"
ISSUE_PROSE = "prose around the JSON answer"
ISSUE_REPAIRED = "invalid JSON repaired (quotes, trailing commas or literals)"
ISSUE_TRUNCATED = "truncated JSON (unclosed brackets or string)"
ISSUE_NO_ENTITIES_KEY = 'no "entities" key'
ISSUE_BAD_SHAPE = 'value of "entities" is not an object of lists'
ISSUE_NON_STRING = "non-string mention"
ISSUE_OUT_OF_SCHEMA = "label outside the schema"


@dataclass
class ParsedCompletion:
    """What a completion says, plus every way in which it departs from the protocol.

    ``entities`` maps configured labels to mentions in the model's order (duplicates removed);
    ``out_of_schema`` keeps (label, mention) pairs the model gave under labels not in the
    schema, so callers can report them. ``valid`` is the strict reading used by the schema
    reward: the answer is exactly one JSON object of the protocol's shape, labels in schema.
    """

    reasoning: str
    entities: dict[str, list[str]]
    out_of_schema: list[tuple[str, str]] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.issues

    @property
    def parsed(self) -> bool:
        """An answer object was found (possibly after repairs)."""
        return not {ISSUE_EMPTY, ISSUE_UNCLOSED_THINK, ISSUE_NO_JSON} & set(self.issues)

    def mentions(self) -> list[tuple[str, str]]:
        return [(m, label) for label, ms in self.entities.items() for m in ms]


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL | re.IGNORECASE)


def split_reasoning(completion: str, reasoning: str | None = None) -> tuple[str, str, list[str]]:
    """Split a completion into (reasoning, answer part, issues).

    ``reasoning`` is a reasoning text a server returned apart from the content (vLLM's and
    Ollama's reasoning parsers do this); the completion is then the answer alone.
    """
    issues: list[str] = []
    text = completion
    if THINK_CLOSE in text:
        # A closing tag without an opening one happens when the chat template opens the block.
        head, _, text = text.rpartition(THINK_CLOSE)
        thought = head.replace(THINK_OPEN, "")
    elif THINK_OPEN in text:
        prefix, _, thought = text.partition(THINK_OPEN)
        issues.append(ISSUE_UNCLOSED_THINK)
        text = prefix
    else:
        thought = ""
    thought = "\n".join(part for part in (reasoning or "", thought) if part.strip())
    return thought.strip(), text.strip(), issues


def parse_completion(
    completion: str, schema: Schema, *, reasoning: str | None = None
) -> ParsedCompletion:
    """Read reasoning and entities from a completion; never raises on model output."""
    thought, answer, issues = split_reasoning(completion or "", reasoning)
    result = ParsedCompletion(reasoning=thought, entities={}, issues=issues)
    if not answer:
        if not issues:
            result.issues.append(ISSUE_EMPTY if not thought else ISSUE_NO_JSON)
        return result
    tagged = _ANSWER_TAG.search(answer) or _FENCE.search(answer)
    body = tagged.group(1).strip() if tagged else answer
    value, body_issues = _load_answer_object(body)
    if value is None:
        result.issues.append(ISSUE_NO_JSON)
        return result
    if tagged and (answer[: tagged.start()].strip() or answer[tagged.end() :].strip()):
        body_issues.append(ISSUE_PROSE)
    result.issues.extend(body_issues)
    if not thought and ISSUE_PROSE in result.issues:
        # Without a think block, prose before the JSON is the model's reasoning.
        result.reasoning = answer[: answer.find("{")].strip() if "{" in answer else ""
    _read_entities(value, schema, result)
    return result


_DECODER = json.JSONDecoder()  # stateless: one instance serves every call


def _load_answer_object(body: str) -> tuple[Any, list[str]]:
    """The first JSON object in ``body`` holding entities, strict JSON first, then repaired."""
    start = body.find("{")
    if start < 0:
        return None, []
    first: Any = None
    while start >= 0:
        try:
            value, end = _DECODER.raw_decode(body, start)
            issues = []
        except json.JSONDecodeError:
            value, end, issues = _LenientJSON(body, start).parse_value()
        if isinstance(value, dict):
            if start > 0 or body[end:].strip():
                issues.append(ISSUE_PROSE)
            if "entities" in value:
                return value, issues
            if first is None:
                first = (value, issues)
        start = body.find("{", max(end, start + 1))
    return first if first is not None else (None, [])


def _read_entities(value: dict[str, Any], schema: Schema, result: ParsedCompletion) -> None:
    if "entities" in value:
        grouped = value["entities"]
    else:
        result.issues.append(ISSUE_NO_ENTITIES_KEY)
        grouped = value
    if isinstance(grouped, list):  # [{"text": ..., "label": ...}, ...]
        result.issues.append(ISSUE_BAD_SHAPE)
        pairs = []
        for item in grouped:
            if isinstance(item, dict):
                mention = next(
                    (item[k] for k in ("text", "mention", "name", "entity") if k in item), None
                )
                label = next((item[k] for k in ("label", "type") if k in item), None)
                if isinstance(label, str):
                    pairs.append((label, mention))
    elif isinstance(grouped, dict):
        pairs = []
        for label, items in grouped.items():
            if not isinstance(items, list):
                result.issues.append(ISSUE_BAD_SHAPE)
                items = [items]
            pairs.extend((str(label), item) for item in items)
    else:
        result.issues.append(ISSUE_BAD_SHAPE)
        return
    seen: set[tuple[str, str]] = set()
    for label, item in pairs:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            result.issues.append(ISSUE_NON_STRING)
            item = str(item)
        if not isinstance(item, str):
            if item is not None:
                result.issues.append(ISSUE_NON_STRING)
            continue
        mention = item.strip()
        if not mention:
            continue
        canonical = schema.canonical(label)
        if canonical is None:
            result.issues.append(ISSUE_OUT_OF_SCHEMA)
            result.out_of_schema.append((label, mention))
        elif (canonical, mention) not in seen:
            seen.add((canonical, mention))
            result.entities.setdefault(canonical, []).append(mention)
    result.issues[:] = list(dict.fromkeys(result.issues))


_SCALAR = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|[A-Za-z]+")
_BARE_KEY = re.compile(r"[A-Za-z_][\w ]*")


_LITERALS = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


class _LenientJSON:
    """A forgiving JSON reader for model output: single quotes, trailing commas, Python
    literals, and text cut off mid-way (complete items are kept, the cut one is dropped)."""

    def __init__(self, text: str, pos: int):
        self.text, self.pos, self.issues = text, pos, {ISSUE_REPAIRED}

    def parse_value(self) -> tuple[Any, int, list[str]]:
        try:
            value = self._value()
        except _Truncated as cut:
            self.issues.add(ISSUE_TRUNCATED)
            value = cut.partial
        except _Invalid:
            value = None
        return value, self.pos, sorted(self.issues)

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        if self.pos >= len(self.text):
            raise _Truncated(None)
        return self.text[self.pos]

    def _value(self) -> Any:
        char = self._peek()
        if char == "{":
            return self._container("}", {})
        if char == "[":
            return self._container("]", [])
        if char in "\"'":
            return self._string()
        match = _SCALAR.match(self.text, self.pos)
        if not match:
            raise _Invalid
        self.pos = match.end()
        token = match.group()
        if token in _LITERALS:
            return _LITERALS[token]
        if token[0].isalpha():
            raise _Invalid
        return float(token) if match.group(1) or match.group(2) else int(token)

    def _string(self) -> str:
        quote, self.pos = self.text[self.pos], self.pos + 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(chars)
            if char == "\\" and self.pos < len(self.text):
                escaped = self.text[self.pos]
                self.pos += 1
                if escaped == "u" and re.fullmatch(
                    r"[0-9a-fA-F]{4}", self.text[self.pos : self.pos + 4]
                ):
                    chars.append(chr(int(self.text[self.pos : self.pos + 4], 16)))
                    self.pos += 4
                else:
                    chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(escaped, escaped))
            else:
                chars.append(char)
        raise _Truncated(None)

    def _container(self, close: str, out: Any) -> Any:
        self.pos += 1
        while True:
            key = None
            try:
                if self._peek() == close:
                    self.pos += 1
                    return out
                if isinstance(out, dict):
                    key = self._string() if self._peek() in "\"'" else self._bare_key()
                    if self._peek() != ":":
                        raise _Invalid
                    self.pos += 1
                    out[key] = self._value()
                else:
                    out.append(self._value())
                if self._peek() == ",":
                    self.pos += 1
                elif self._peek() != close:
                    raise _Invalid
            except _Truncated as cut:
                if isinstance(out, dict) and cut.partial is not None and key is not None:
                    out[key] = cut.partial
                elif isinstance(out, list) and cut.partial is not None:
                    out.append(cut.partial)
                raise _Truncated(out) from None

    def _bare_key(self) -> str:
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            raise _Invalid
        self.pos = match.end()
        return match.group().strip()


class _Truncated(Exception):
    def __init__(self, partial: Any):
        self.partial = partial


class _Invalid(Exception):
    pass


# --------------------------------------------------------------------------- metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")


@functools.cache
def _punctuation_table() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), for ``str.translate``."""
    return dict.fromkeys(
        c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")
    )


def normalize_mention(text: str) -> str:
    """The reference's normalization: lowercase, drop punctuation and articles, squash spaces."""
    text = text.lower().translate(_punctuation_table())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def entity_set(pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Set of (normalized mention, lowercased label) from (mention, label) pairs."""
    return {(normalize_mention(m), label.strip().lower()) for m, label in pairs}


@dataclass
class PRF:
    """Micro counts; add them over sentences, read precision/recall/F1 at the end."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.n_pred + other.n_pred, self.n_gold + other.n_gold)

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        denominator = self.n_pred + self.n_gold
        return 2 * self.tp / denominator if denominator else 0.0


def string_prf(predicted: Iterable[tuple[str, str]], gold: Iterable[tuple[str, str]]) -> PRF:
    """Counts of the paper's metric for one sentence, from (mention, label) pairs."""
    pred_set, gold_set = entity_set(predicted), entity_set(gold)
    return PRF(len(pred_set & gold_set), len(pred_set), len(gold_set))
