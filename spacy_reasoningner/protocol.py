"""The ReasoningNER task protocol, shared by inference, data building, rewards and evaluation.

One module owns the format so it cannot drift between training and inference:

* ``Schema``: the entity types (optionally with definitions) as the model sees them;
* ``render_messages``: the single user turn of the paper (instruction, two notes, schema,
  output shape, text), plus ``render_prompt`` to apply a tokenizer's chat template;
* ``parse_completion``: reasoning + ``{"entities": {label: [mention, ...]}}`` out of whatever
  the model wrote, tolerant of the usual ways small models get it wrong, with every deviation
  recorded in ``ParsedCompletion.issues``;
* ``normalize_mention`` and ``PRF``/``string_prf``: the paper's string-level metric, and
  ``reference_answer``: a completion read exactly as the reference implementation reads it
  for that metric and its GRPO rewards (strict JSON, nothing repaired).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
# Where a reasoning pass stops: at the close tag, or already at a line that opens a closing
# tag, which in a think block is the close tag being written (its last tokens are not worth
# a forward pass each; the answer pass writes the tag whole).
REASONING_STOPS = (THINK_CLOSE, "\n</")
# A reasoning line this long that repeats an earlier one is a loop, not an argument: a small
# model that writes '"Caldicott" is a person.' a second time writes it a tenth time.
MIN_LOOP_LINE_CHARS = 12


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


# --------------------------------------------------------------------------- parsing

ISSUE_EMPTY = "empty output"
ISSUE_UNCLOSED_THINK = "unclosed think block"
ISSUE_NO_JSON = "no JSON object in the answer"
ISSUE_PROSE = "prose around the JSON answer"
ISSUE_REPAIRED = "invalid JSON repaired (quotes, trailing commas or literals)"
ISSUE_TRUNCATED = "truncated JSON (unclosed brackets or string)"
ISSUE_TOO_LONG = "answer JSON too long: read up to the reader's budget"
ISSUE_NO_ENTITIES_KEY = 'no "entities" key'
ISSUE_BAD_SHAPE = 'value of "entities" is not an object of lists'
ISSUE_NON_STRING = "non-string mention"
ISSUE_OUT_OF_SCHEMA = "label outside the schema"

REJECTED_NOT_A_STRING = "not a string mention"
REJECTED_NO_LABEL = "no label given"


@dataclass
class ParsedCompletion:
    """What a completion says, plus every way in which it departs from the protocol.

    ``entities`` maps configured labels to mentions in the model's order (duplicates removed);
    ``out_of_schema`` keeps (label, mention) pairs the model gave under labels not in the
    schema, and ``rejected`` (label, item, reason) the items that are not mentions at all
    (lists, objects, booleans; the item as short JSON), so callers can report everything the
    model named. ``valid`` is the strict reading used by the schema reward: the answer is
    exactly one JSON object of the protocol's shape, labels in schema.
    """

    reasoning: str
    entities: dict[str, list[str]]
    out_of_schema: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
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
_MARKUP = re.compile(r"```[ \t]*(?:json|JSON)?|</?answer>", re.IGNORECASE)
# Where an answer object starts: "{" then the entities key, however it is quoted.
_ANSWER_START = re.compile(r"""\{\s*(?:"entities"|'entities'|entities)\s*:""")
# Where any object starts: "{" then "}" or a key and ":". Strings stop at the next quote, so
# scanning every "{" of a text stays linear.
_OBJECT_START = re.compile(
    r"""\{\s*(?:\}|"[^"\\]*(?:\\.[^"\\]*)*"\s*:|'[^'\\]*(?:\\.[^'\\]*)*'\s*:|[A-Za-z_][\w ]*:)""",
    re.DOTALL,
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # unpaired \\ud800 escapes; not encodable


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


def reasoned_label(reasoning: str, mention: str, labels: Sequence[str]) -> str | None:
    """Of ``labels`` (names as the prompt gives them), the one the reasoning gives
    ``mention``: the first named after the mention on the line of its first occurrence that
    names any ('"Apple Inc." is an organization.'). None when no line does. For a mention
    answered under several labels, so that the entity set follows the model's own argument."""
    if not mention or not labels:
        return None
    names = {label.lower(): label for label in labels}
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b"
    )
    lowered, needle = reasoning.lower(), mention.lower()
    at = lowered.find(needle)
    while at >= 0:
        end = at + len(needle)
        line_end = lowered.find("\n", end)
        found = pattern.search(lowered, end, line_end if line_end >= 0 else len(lowered))
        if found:
            return names[found.group(1)]
        at = lowered.find(needle, end)
    return None


def open_think_block(prompt: str) -> str:
    """A rendered prompt with the think block opened (``<think>`` and a newline), as the
    protocol's completions begin, so that a reasoning pass does not spend forward passes
    writing the tag; a prompt whose chat template already opened it is only completed."""
    if prompt.endswith(THINK_OPEN + "\n"):
        return prompt
    return prompt + ("\n" if prompt.endswith(THINK_OPEN) else THINK_OPEN + "\n")


def closed_think_block(thought: str, *, stop_loops: bool) -> str:
    """The think block the answer pass of constrained answers continues from: the reasoning
    pass's text without its tags, cut before its first repeated line when ``stop_loops``."""
    thought = thought.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
    if stop_loops and (loop := reasoning_loop_start(thought)) is not None:
        thought = thought[:loop]
    return f"{THINK_OPEN}\n{thought.strip()}\n{THINK_CLOSE}\n"


def split_reasoning(completion: str, reasoning: str | None = None) -> tuple[str, str, list[str]]:
    """Split a completion into (reasoning, answer part, issues) at its think tags.

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
    return _join_reasoning(reasoning, thought), text.strip(), issues


def _join_reasoning(separate: str | None, inline: str) -> str:
    return "\n".join(part for part in (separate or "", inline) if part.strip()).strip()


def parse_completion(
    completion: str, schema: Schema, *, reasoning: str | None = None
) -> ParsedCompletion:
    """Read reasoning and entities from a completion. Never raises, whatever the text, and
    runs in time linear in its length.

    The answer is the JSON object after the think block holding an ``entities`` key (inside
    an ``<answer>`` tag or a fence when there is one), else the first JSON object there. A
    think tag or a fence inside a mention does not cut the answer: when the text after the
    last ``</think>`` holds no complete answer, an answer object with a tag inside is taken.
    """
    completion = completion or ""
    # Unpaired surrogates come from the text itself or from \\u escapes: look once.
    plain = completion.isascii() and "\\u" not in completion
    clean = _as_is if plain and (reasoning or "").isascii() else _clean
    thought, answer, issues = split_reasoning(completion, reasoning)
    found = _find_answer(answer)
    if _rank(found) < _COMPLETE and (THINK_CLOSE in completion or THINK_OPEN in completion):
        alternative = _answer_around_tags(completion, reasoning)
        if alternative is not None and _rank(alternative[2]) > _rank(found):
            thought, answer, found = alternative
            issues = []
    result = ParsedCompletion(reasoning=clean(thought), entities={}, issues=issues)
    if found is None:
        if not issues:
            result.issues.append(ISSUE_EMPTY if not (answer or thought) else ISSUE_NO_JSON)
        return result
    result.issues.extend(found.issues)
    outside = answer[: found.start] + answer[found.end :]
    if outside and _MARKUP.sub("", outside).strip():
        result.issues.append(ISSUE_PROSE)
        if not thought:  # without a think block, prose before the JSON is the reasoning
            result.reasoning = clean(_MARKUP.sub("", answer[: found.start]).strip())
    _read_entities(found.value, schema, result, clean)
    result.issues[:] = list(dict.fromkeys(result.issues))
    return result


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects in ``text``, left to right, read (and repaired) as answers are: for
    other model output, such as a judge's scores. Never raises; linear time."""
    for found in _ObjectSearch(text).objects(_OBJECT_START):
        yield found.value


def _clean(text: str) -> str:
    """Text without unpaired surrogates (from ``\\ud800`` escapes), which UTF-8 cannot write."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def _as_is(text: str) -> str:
    return text


@dataclass
class _Found:
    """A JSON object found in an answer: its value, where it is, how it was read."""

    value: dict[str, Any]
    start: int
    end: int
    issues: list[str]


_NOTHING, _OTHER_OBJECT, _CUT_ANSWER, _COMPLETE = range(4)


def _rank(found: _Found | None) -> int:
    if found is None:
        return _NOTHING
    if "entities" not in found.value:
        return _OTHER_OBJECT
    cut = ISSUE_TRUNCATED in found.issues or ISSUE_TOO_LONG in found.issues
    return _CUT_ANSWER if cut else _COMPLETE


def _find_answer(answer: str, inside_tags: Sequence[int] = ()) -> _Found | None:
    """The answer object of ``answer``: the first one holding entities (one inside an
    ``<answer>`` tag, then one inside a fence, preferred), else the first object holding
    entities anywhere, else the first object. With ``inside_tags``, only an answer object
    containing one of those positions."""
    if not inside_tags and answer.startswith("{"):  # the usual case: the answer is the object
        try:
            value, end = _DECODER.raw_decode(answer, 0)
        except (ValueError, RecursionError):
            pass
        else:
            if end == len(answer) and isinstance(value, dict) and "entities" in value:
                return _Found(value, 0, end, [])
    search = _ObjectSearch(answer)
    regions = [  # best first; most answers have neither
        _Regions(_ANSWER_TAG if "<" in answer else None, answer),
        _Regions(_FENCE if "```" in answer else None, answer),
    ]
    best, best_level = None, -1
    for found in search.objects(_ANSWER_START):
        if inside_tags and not _contains_any(found, inside_tags):
            continue
        level = next((2 - i for i, r in enumerate(regions) if r.contain(found.start)), 0)
        if level > best_level:
            best, best_level = found, level
        if best_level == 2 or (best_level == 1 and not regions[0]) or not any(regions):
            break
    if best is not None or inside_tags:
        return best
    first = None
    for found in search.objects(_OBJECT_START):
        if "entities" in found.value:
            return found
        first = first or found
    return first


class _Regions:
    """The spans of a pattern's matches in a text, for 'does this position lie inside one'."""

    def __init__(self, pattern: re.Pattern[str] | None, text: str):
        spans = [m.span() for m in pattern.finditer(text)] if pattern else []
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def contain(self, position: int) -> bool:
        index = bisect.bisect_right(self.starts, position) - 1
        return index >= 0 and position < self.ends[index]


def _contains_any(found: _Found, positions: Sequence[int]) -> bool:
    index = bisect.bisect_right(positions, found.start)
    return index < len(positions) and positions[index] < found.end


def _answer_around_tags(
    completion: str, reasoning: str | None
) -> tuple[str, str, _Found | None] | None:
    """(reasoning, answer, object) when a think tag sits inside the answer's JSON (in a
    mention), so the split at the tags cut the answer; None when no object contains a tag
    outside an unclosed think block."""
    tags = [m.start() for m in re.finditer(re.escape(THINK_CLOSE), completion)]
    tags += [m.start() for m in re.finditer(re.escape(THINK_OPEN), completion)]
    found = _find_answer(completion, sorted(tags))
    if found is None:
        return None
    before = completion[: found.start]
    if before.rfind(THINK_OPEN) > before.rfind(THINK_CLOSE):
        return None  # the object is a draft inside a think block that never closed
    close = before.rfind(THINK_CLOSE)
    offset = close + len(THINK_CLOSE) if close >= 0 else 0
    thought = before[: max(close, 0)].replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
    answer = completion[offset:]
    found.start, found.end = found.start - offset, found.end - offset
    return _join_reasoning(reasoning, thought), answer, found


_DECODER = json.JSONDecoder()  # stateless: one instance serves every call


class _ObjectSearch:
    """Parses the objects starting at the matches of a pattern, left to right, skipping text
    already read. Bounded so that any text costs linear time: a failed strict parse costs the
    text before it (``JSONDecodeError`` counts its line number), so only a few are tried;
    and objects read are capped (garbage, not an answer, past that)."""

    MAX_STRICT_FAILURES = 4
    MAX_ATTEMPTS = 1000
    # Tokens the lenient reader may read per completion: far beyond any real answer (a
    # 32k-token completion), and what keeps a megabyte of dense brackets well under a second.
    MAX_LENIENT_TOKENS = 100_000

    def __init__(self, text: str):
        self.text = text
        self.strict_failures = 0
        self.attempts = 0
        self.tokens_left = self.MAX_LENIENT_TOKENS

    def objects(self, starts: re.Pattern[str]) -> Iterator[_Found]:
        resume = 0
        for match in starts.finditer(self.text):
            start = match.start()
            if start < resume:
                continue
            if self.attempts >= self.MAX_ATTEMPTS or self.tokens_left <= 0:
                return
            self.attempts += 1
            value, end, issues = self._parse_at(start)
            resume = max(end, start + 1)
            if isinstance(value, dict):
                yield _Found(value, start, end, issues)

    def _parse_at(self, start: int) -> tuple[Any, int, list[str]]:
        if self.strict_failures < self.MAX_STRICT_FAILURES:
            try:
                value, end = _DECODER.raw_decode(self.text, start)
                return value, end, []
            except (ValueError, RecursionError):  # bad JSON, too deep, over-long integers
                self.strict_failures += 1
        reader = _LenientJSON(self.text, start, self.tokens_left)
        parsed = reader.parse()
        self.tokens_left = reader.tokens_left
        return parsed


def _read_entities(
    value: dict[str, Any], schema: Schema, result: ParsedCompletion, clean: Callable[[str], str]
) -> None:
    if "entities" in value:
        grouped = value["entities"]
    else:
        result.issues.append(ISSUE_NO_ENTITIES_KEY)
        grouped = value
    pairs: list[tuple[str, Any]] = []
    if isinstance(grouped, list):  # [{"text": ..., "label": ...}, ...]
        result.issues.append(ISSUE_BAD_SHAPE)
        for item in grouped:
            mention, label = item, None
            if isinstance(item, dict):
                mention = next(
                    (item[k] for k in ("text", "mention", "name", "entity") if k in item), item
                )
                label = next((item[k] for k in ("label", "type") if k in item), None)
            if isinstance(label, str):
                pairs.append((label, mention))
            elif mention is not None:
                result.rejected.append(("", _item_text(mention), REJECTED_NO_LABEL))
    elif isinstance(grouped, dict):
        for label, items in grouped.items():
            if not isinstance(items, list):
                result.issues.append(ISSUE_BAD_SHAPE)
                items = [items]
            pairs.extend((label, item) for item in items)
    else:
        result.issues.append(ISSUE_BAD_SHAPE)
        if grouped is not None:
            result.rejected.append(("", _item_text(grouped), REJECTED_NO_LABEL))
        return
    flags: dict[str, None] = {}  # issues, once each (an answer may hold many items)
    seen: set[tuple[str, str]] = set()
    for label, item in pairs:
        if item.__class__ is not str:
            if (isinstance(item, int) and not isinstance(item, bool)) or (
                isinstance(item, float) and math.isfinite(item)  # not nan or inf
            ):
                item = str(item)
            elif item is None:
                continue
            else:
                result.rejected.append(
                    (schema.canonical(label) or label, _item_text(item), REJECTED_NOT_A_STRING)
                )
            flags[ISSUE_NON_STRING] = None
            if item.__class__ is not str:
                continue
        mention = clean(item.strip())
        if not mention:
            continue
        canonical = schema.canonical(label)
        if canonical is None:
            flags[ISSUE_OUT_OF_SCHEMA] = None
            result.out_of_schema.append((clean(label), mention))
        elif (canonical, mention) not in seen:
            seen.add((canonical, mention))
            result.entities.setdefault(canonical, []).append(mention)
    result.issues.extend(flags)


def _item_text(item: Any, limit: int = MAX_MENTION_CHARS) -> str:
    """A non-mention item as short JSON, for reports."""
    if isinstance(item, str):
        text = item
    else:
        try:
            text = json.dumps(item, ensure_ascii=False)
        except (ValueError, RecursionError):  # nested too deep, or numbers too long to print
            text = f"<{type(item).__name__}>"
    return _clean(text if len(text) <= limit else text[: limit - 3] + "...")


_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z]+")
_BARE_KEY = re.compile(r"[A-Za-z_][\w ]*")
_SPACE = re.compile(r"[ \t\r\n]*")
_STRING = {
    quote: re.compile(rf"{quote}([^{quote}\\]*(?:\\.[^{quote}\\]*)*){quote}", re.DOTALL)
    for quote in "\"'"
}
_CONTROL = re.compile(r"[\x00-\x1f]")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_LITERALS = {"true": True, "false": False, "null": None}
_REPAIRED_LITERALS = {
    "True": True,
    "False": False,
    "None": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
}
_MAX_INT_DIGITS = 4000  # int() refuses longer digit strings (Python's conversion limit)

# Reader states: what the next token may be.
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE = range(5)


class _LenientJSON:
    """A forgiving JSON reader for model output: single quotes, bare keys, trailing commas,
    Python literals, raw control characters in strings, and text cut off mid-way (complete
    items are kept, the cut one dropped). Iterative, so nesting depth costs memory, not
    stack; every repair is recorded, so text that needs none reads as strict JSON."""

    def __init__(self, text: str, pos: int, tokens: int):
        self.text, self.pos, self.issues = text, pos, set()
        self.tokens_left = tokens
        self.root: Any = None

    def parse(self) -> tuple[Any, int, list[str]]:
        """(value or None, position where reading stopped, issues)."""
        try:
            value = self._read()
        except _Truncated:
            self.issues.add(ISSUE_TRUNCATED if self.tokens_left > 0 else ISSUE_TOO_LONG)
            value = self.root
        except _Invalid:
            value = None
        return value, self.pos, sorted(self.issues)

    def _read(self) -> Any:
        text, size, pos = self.text, len(self.text), self.pos
        skip_space = _SPACE.match
        stack: list[Any] = []  # open containers, innermost last
        keys: list[Any] = []  # per open container: the key awaiting its value (dicts)
        state, after_comma = _VALUE, False
        try:
            while True:
                self.tokens_left -= 1
                if self.tokens_left < 0:
                    raise _Truncated  # over budget: keep what was read, as for a cut text
                if pos < size and text[pos] in " \t\r\n":
                    pos = skip_space(text, pos).end()
                if pos >= size:
                    raise _Truncated
                char = text[pos]
                if state == _COLON:
                    if char != ":":
                        raise _Invalid
                    pos += 1
                    state = _VALUE
                    continue
                top = stack[-1] if stack else None
                if state == _COMMA_OR_CLOSE and char == ",":
                    pos += 1
                    state = _VALUE_OR_CLOSE if top.__class__ is list else _KEY_OR_CLOSE
                    after_comma = True
                    continue
                if state != _VALUE and char == ("]" if top.__class__ is list else "}"):
                    if after_comma:
                        self.issues.add(ISSUE_REPAIRED)  # trailing comma
                    pos += 1
                    stack.pop()
                    keys.pop()
                elif state == _COMMA_OR_CLOSE:
                    raise _Invalid
                elif state == _KEY_OR_CLOSE:
                    keys[-1], pos = self._string(pos) if char in "\"'" else self._bare_key(pos)
                    state, after_comma = _COLON, False
                    continue
                elif char == "{" or char == "[":
                    container: Any = {} if char == "{" else []
                    pos += 1
                    self._attach(top, keys, container)
                    stack.append(container)
                    keys.append(None)
                    state = _KEY_OR_CLOSE if char == "{" else _VALUE_OR_CLOSE
                    after_comma = False
                    continue
                else:
                    value, pos = self._string(pos) if char in "\"'" else self._scalar(pos)
                    self._attach(top, keys, value)
                after_comma = False
                if not stack:
                    return self.root
                state = _COMMA_OR_CLOSE
        finally:
            self.pos = pos

    def _attach(self, top: Any, keys: list[Any], value: Any) -> None:
        # Containers are attached when opened, so a cut one is kept with its complete items.
        if top is None:
            self.root = value
        elif top.__class__ is list:
            top.append(value)
        else:
            top[keys[-1]] = value

    def _string(self, pos: int) -> tuple[str, int]:
        text = self.text
        quote = text[pos]
        close = text.find(quote, pos + 1)
        if close >= 0 and text.find("\\", pos + 1, close) < 0:  # no escapes: the common case
            body, end = text[pos + 1 : close], close + 1
        else:
            match = _STRING[quote].match(text, pos)
            if match is None:
                raise _Truncated  # no closing quote: the text was cut inside the string
            body, end = match.group(1), match.end()
        if quote == "'" or (not body.isprintable() and _CONTROL.search(body)):
            self.issues.add(ISSUE_REPAIRED)
        if "\\" not in body:
            return body, end
        body = _ESCAPE.sub(self._unescape, body)
        if _LONE_SURROGATE.search(body):  # join \\ud83d\\ude00-style pairs as json does
            body = body.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return body, end

    def _unescape(self, match: re.Match[str]) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:  # uXXXX; surrogate pairs are joined by the caller
            return chr(int(escaped[1:], 16))
        if escaped not in _ESCAPES:
            self.issues.add(ISSUE_REPAIRED)
        return _ESCAPES.get(escaped, escaped)

    def _scalar(self, pos: int) -> tuple[Any, int]:
        number = _NUMBER.match(self.text, pos)
        if number:
            token = number.group()
            if number.group(1) or number.group(2) or len(token) > _MAX_INT_DIGITS:
                return float(token), number.end()
            return int(token), number.end()
        word = _WORD.match(self.text, pos)
        if word is None:
            raise _Invalid
        if word.group() in _LITERALS:
            return _LITERALS[word.group()], word.end()
        if word.group() in _REPAIRED_LITERALS:
            self.issues.add(ISSUE_REPAIRED)
            return _REPAIRED_LITERALS[word.group()], word.end()
        if word.end() >= len(self.text):
            raise _Truncated  # a literal cut mid-word ("tr")
        raise _Invalid

    def _bare_key(self, pos: int) -> tuple[str, int]:
        match = _BARE_KEY.match(self.text, pos)
        if not match:
            raise _Invalid
        self.issues.add(ISSUE_REPAIRED)
        return match.group().strip(), match.end()


class _Truncated(Exception):
    pass


class _Invalid(Exception):
    pass


# --------------------------------------------------------------------------- metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")


# The reference removes ASCII punctuation only (Python's ``string.punctuation``): curly
# quotes, dashes and other Unicode punctuation stay part of a mention.
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_mention(text: str) -> str:
    """The reference's normalization: lowercase, drop ASCII punctuation and the articles
    a/an/the, squash whitespace."""
    text = text.lower().translate(_ASCII_PUNCTUATION)
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


# --------------------------------------------------------------------------- the reference's reading

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
