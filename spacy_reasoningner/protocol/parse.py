"""Reading a completion: reasoning and ``{"entities": {label: [mention, ...]}}`` out of
whatever the model wrote, every departure from the protocol recorded as an issue."""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .lenient_json import ISSUE_TOO_LONG, ISSUE_TRUNCATED, LONE_SURROGATE, LenientJSON
from .prompt import MAX_MENTION_CHARS
from .schema import Schema
from .thinking import THINK_CLOSE, THINK_OPEN

ISSUE_EMPTY = "empty output"
ISSUE_UNCLOSED_THINK = "unclosed think block"
ISSUE_NO_JSON = "no JSON object in the answer"
ISSUE_PROSE = "prose around the JSON answer"
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
    return LONE_SURROGATE.sub("\ufffd", text) if LONE_SURROGATE.search(text) else text


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
        reader = LenientJSON(self.text, start, self.tokens_left)
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
