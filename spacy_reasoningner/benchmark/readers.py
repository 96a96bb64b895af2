"""Read every corpus format of the training and benchmark data into one record, ``NERRecord``.

Training mixes sources that annotate differently: CoNLL/BIO files (CrossNER, MIT, CoNLL-2003)
give token spans, InstructUIE JSON gives mention strings with optional offsets, UniNER
conversations and SLIMER rows give per-type mention lists (an empty list is a negative type),
the NER-CoT release adds a reasoning chain, and spaCy ``.spacy`` files give Doc entities. Each
reader turns its format into ``NERRecord``: entities are always character offsets into
``text``, ``schema`` keeps the negative types, and mentions that cannot be found in the text
are kept in ``unaligned`` rather than dropped. ``read_records`` picks the reader by suffix or
by the keys of the first JSON record.

For BIO files the tag column is detected per file (``token<TAB>tag``, ``tag<TAB>token`` and
CoNLL-2003's ``token POS chunk tag``); tags may be IOB1, IOB2 or BIOES. ``labels.json`` files
(see the data README) map BIO tags to the type names of a naming convention and give
definitions.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import DocBin

from ..alignment import find_word_occurrences

_TAG = re.compile(r"^(O|[BIES]-.+)$")
_SPACES = re.compile(r" +")
DOCSTART = "-DOCSTART-"
# The five CrossNER domains, as the data folders of the benchmark data name them.
CROSSNER_DATASETS = (
    "crossner_ai",
    "crossner_literature",
    "crossner_music",
    "crossner_politics",
    "crossner_science",
)
# The formats ``read_records`` accepts besides "auto".
READ_FORMATS = ("bio", "instructuie", "uniner", "slimer", "ner-cot", "docbin")
_BIO_SUFFIXES = (".txt", ".bio", ".conll", ".tsv")
Entity = tuple[int, int, str]


@dataclass
class NERRecord:
    """One annotated text, whatever the corpus format.

    ``entities`` are ``(start_char, end_char, label)`` into ``text``, sorted by offsets.
    ``source`` locates the record: ``path:line`` (BIO, JSONL) or ``path[index]`` (JSON list,
    DocBin). ``tokens`` is the source's tokenization where it has one (for BIO files ``text``
    is the tokens joined by single spaces). ``schema`` lists the types the annotation covers,
    negatives included (None: not known, as in BIO files, where absent types are not asserted
    absent). ``unaligned`` holds the (mention, label) pairs the source names but the text does
    not contain, so that they are reported instead of silently lost. ``reasoning`` is the
    chain of thought of NER-CoT data and ``id`` the source's record id (guid, UniNER id, SLIMER
    passage id). ``mentions`` is the source's own (mention, label) list where it names mentions
    without offsets (NER-CoT, UniNER, SLIMER), in its order, repeats kept: the reference writes
    its SFT targets from it. It is
    wording, not content: records with the same entities compare equal whatever it holds.
    """

    text: str
    entities: list[Entity]
    source: str
    tokens: list[str] | None = None
    dataset: str = ""
    schema: list[str] | None = None
    definitions: dict[str, str] | None = None
    unaligned: list[tuple[str, str]] = field(default_factory=list)
    reasoning: str | None = None
    id: str = ""
    mentions: list[tuple[str, str]] | None = field(default=None, compare=False)


def decode_bio(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Token spans ``(start, end, type)`` from IOB1, IOB2 or BIOES tags.

    One decoder serves all schemes: an ``I-`` that does not continue an open entity of its
    type starts one (IOB1; never happens in valid IOB2), ``B-`` always starts one, ``S-`` is
    a one-token entity and ``E-`` closes the open one.
    """
    spans: list[tuple[int, int, str]] = []
    start, kind = -1, ""  # the open entity, if start >= 0
    for i, tag in enumerate(tags):
        prefix, label = tag[:1], tag[2:]
        continues = start >= 0 and label == kind and prefix in ("I", "E")
        if start >= 0 and not continues:
            spans.append((start, i, kind))
            start = -1
        if prefix != "O" and not continues:
            start, kind = i, label
        if prefix in ("S", "E") and start >= 0:
            spans.append((start, i + 1, kind))
            start = -1
    if start >= 0:
        spans.append((start, len(tags), kind))
    return spans


def read_bio(path: str | Path, *, dataset: str = "") -> list[NERRecord]:
    """Sentences of a BIO file (blank lines between sentences, ``-DOCSTART-`` lines skipped);
    ``dataset`` tags every record with its source dataset id.

    Raises ``ValueError`` naming the file and line on inconsistent columns, empty fields, or
    when no column holds a tag on every line.
    """
    path = Path(path)
    rows: list[tuple[int, list[str]]] = []  # (line number, fields); [] ends a sentence
    n_cols = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith(DOCSTART):
                rows.append((number, []))
                continue
            # Tab-separated lines may hold spaces inside a field; otherwise split on spaces.
            fields = line.split("\t") if "\t" in line else _SPACES.split(line.strip(" "))
            if not all(fields):
                raise ValueError(f"{path}:{number}: empty field in {line!r}")
            if n_cols and len(fields) != n_cols:
                raise ValueError(
                    f"{path}:{number}: {len(fields)} columns, expected {n_cols} as on the "
                    f"first line: {line!r}"
                )
            if len(fields) < 2:
                raise ValueError(f"{path}:{number}: one column, need a token and a tag: {line!r}")
            n_cols = len(fields)
            rows.append((number, fields))
    tag_col, token_col = _tag_columns(path, [r for r in rows if r[1]], n_cols)
    records: list[NERRecord] = []
    sentence: list[tuple[int, list[str]]] = []
    for row in [*rows, (0, [])]:
        if row[1]:
            sentence.append(row)
        elif sentence:
            tokens = [fields[token_col] for _, fields in sentence]
            tags = [fields[tag_col] for _, fields in sentence]
            records.append(_record(tokens, tags, f"{path}:{sentence[0][0]}", dataset))
            sentence = []
    return records


def _tag_columns(path: Path, rows: list[tuple[int, list[str]]], n_cols: int) -> tuple[int, int]:
    """(tag column, token column): the last column if it is all tags (CoNLL puts POS and
    chunk tags, which also look like BIO, in between), else the first one."""
    if not rows:
        return n_cols - 1, 0
    first_bad: dict[int, tuple[int, str]] = {}
    for col in (n_cols - 1, 0):
        bad = next(((n, f[col]) for n, f in rows if not _TAG.match(f[col])), None)
        if bad is None:
            return (col, 0) if col else (0, n_cols - 1)
        first_bad[col] = bad
    # Report the column that looks most like tags: its first non-tag comes latest.
    number, value = max(first_bad.values())
    raise ValueError(
        f"{path}:{number}: {value!r} is not a BIO tag (O, or B-/I-/E-/S- and a type), and "
        "neither the first nor the last column holds a tag on every line"
    )


def _record(tokens: list[str], tags: list[str], source: str, dataset: str) -> NERRecord:
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    entities = [
        (starts[a], starts[b - 1] + len(tokens[b - 1]), label) for a, b, label in decode_bio(tags)
    ]
    return NERRecord(" ".join(tokens), entities, source, tokens, dataset=dataset)


def relabel(records: Sequence[NERRecord], label_map: dict[str, str]) -> list[NERRecord]:
    """Records with types renamed by ``label_map``; types not in it are dropped, from the
    entities and equally from the schema, definitions and unaligned mentions."""
    return [
        dataclasses.replace(
            r,
            entities=[(s, e, label_map[t]) for s, e, t in r.entities if t in label_map],
            schema=None
            if r.schema is None
            else list(dict.fromkeys(label_map[t] for t in r.schema if t in label_map)),
            definitions=None
            if r.definitions is None
            else {label_map[t]: d for t, d in r.definitions.items() if t in label_map},
            unaligned=[(m, label_map[t]) for m, t in r.unaligned if t in label_map],
        )
        for r in records
    ]


def _load_types(path: str | Path, naming: str) -> list[dict]:
    types = list(json.loads(Path(path).read_text(encoding="utf-8"))["types"].values())
    for entry in types:
        if naming not in entry:
            known = sorted(k for k in entry if k.endswith("_name"))
            raise ValueError(
                f"{path}: type {entry.get('bio_tag')!r} has no {naming!r}; use {known}"
            )
    return types


def load_label_map(
    labels_json_path: str | Path, naming: str = "instructuie_name"
) -> dict[str, str]:
    """``{bio_tag: name}`` under a naming convention of a ``labels.json``; types the
    convention leaves out (name null, e.g. misc under ``uniner_name``) are dropped."""
    return {t["bio_tag"]: t[naming] for t in _load_types(labels_json_path, naming) if t[naming]}


def load_definitions(
    labels_json_path: str | Path,
    naming: str = "instructuie_name",
    field: str = "definition_slimer",
) -> dict[str, str]:
    """``{name: definition}``, for types with a name and a non-empty ``field``."""
    return {
        t[naming]: t[field]
        for t in _load_types(labels_json_path, naming)
        if t[naming] and t.get(field)
    }


# --- JSON formats ------------------------------------------------------------------------------

_INSTRUCTUIE_SHAPE = (
    'a JSON list or JSONL of {"sentence": str, "entities": '
    '[{"name": str, "type": str, "pos": [start, end] (optional)}]}'
)
_UNINER_SHAPE = (
    'a JSON list or JSONL of {"id": str, "conversations": [{"from": "human", "value": '
    '"Text: <passage>"}, {"from": "gpt", "value": ...}, then pairs of {"from": "human", '
    '"value": "What describes <type> in the text?"} and {"from": "gpt", "value": '
    '"<JSON list of mention strings>"}]}'
)
_SLIMER_SHAPE = (
    'JSONL of {"doc_question_pairID": "<passage id>:<n>", "tagName": str, "input": str, '
    '"output": "<JSON list of mention strings>"}'
)
_NER_COT_SHAPE = (
    'JSONL of {"guid": str, "dataset": str or null, "sentence": str, "schema": [str], "cot": str, '
    '"entities": [{"text": str, "label": str}]}'
)
_QUESTION = re.compile(r"What describes (.+) in the text\?")
_TEXT_PREFIX = "Text: "
_JSON_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _json_items(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, object)`` for each record of a JSON list or of a JSONL file.

    The location, ``path[index]`` or ``path:line``, becomes the record's ``source`` and
    prefixes every error, so a bad record can be found in a file of thousands.
    """
    text = path.read_text(encoding="utf-8-sig")
    items: Iterable[tuple[str, Any]]
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno}); "
                "expected a JSON list of objects, or one object per line (JSONL)"
            ) from None
        items = ((f"{path}[{i}]", item) for i, item in enumerate(data))
    else:
        items = _jsonl_lines(path, text)
    for where, item in items:
        if not isinstance(item, dict):
            raise ValueError(f"{where}: {_json_type(item)}, expected a JSON object")
        yield where, item


def _jsonl_lines(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and other separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno}); "
                "expected one JSON object per line (JSONL), or a JSON list"
            ) from None


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _need(
    item: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, shape: str
) -> Any:
    """``item[key]``, checked to be present and of ``kind`` (bools are not integers)."""
    if key not in item:
        raise ValueError(f"{where}: missing key {key!r}; expected {shape}")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, kind):  # no field is a boolean
        raise ValueError(f"{where}: {key!r} is {_json_type(value)}; expected {shape}")
    return value


def _strings(value: object, where: str, what: str, shape: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {what} is not a list of strings: {value!r}; expected {shape}")
    return value


def _mention_list(answer: str, where: str, what: str, shape: str) -> list[str]:
    """The mention strings of a model-style answer: a JSON list of strings in a string."""
    try:
        mentions = json.loads(answer)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: {what} is not valid JSON ({error.msg}): {answer!r}; expected {shape}"
        ) from None
    return _strings(mentions, where, what, shape)


def _grounded_record(
    text: str,
    mentions: Iterable[tuple[str, str]],
    source: str,
    spans: Iterable[Entity] = (),
    **fields: Any,
) -> NERRecord:
    """A record whose entities are ``spans`` plus every occurrence of each (mention, label).

    Formats that name mentions without offsets do not say which occurrence is meant, so all
    are taken: exact ones, else ones differing in case or whitespace. Mentions found nowhere
    go to ``unaligned``.
    """
    mentions = list(mentions)
    entities = set(spans)
    unaligned = []
    for mention, label in dict.fromkeys(mentions):
        stripped = mention.strip()
        found = find_word_occurrences(text, stripped, fuzzy=False) or find_word_occurrences(
            text, stripped, fuzzy=True
        )
        entities.update((start, end, label) for start, end in found)
        if not found:
            unaligned.append((mention, label))
    return NERRecord(
        text, sorted(entities), source, unaligned=unaligned, mentions=mentions, **fields
    )


def read_instructuie_json(path: str | Path, dataset: str = "") -> list[NERRecord]:
    """Sentences of an InstructUIE-style JSON list (or JSONL) of
    ``{"sentence", "entities": [{"name", "type", "pos"}]}``.

    ``pos`` (``[start, end]``, optional) must slice ``name`` out of the sentence; entities
    without it are grounded to every occurrence of ``name``. The schema is not known.
    """
    path = Path(path)
    records = []
    for where, item in _json_items(path):
        text = _need(item, "sentence", str, where, _INSTRUCTUIE_SHAPE)
        spans, mentions = [], []
        for i, entity in enumerate(_need(item, "entities", list, where, _INSTRUCTUIE_SHAPE)):
            at = f"{where}: entity {i}"
            if not isinstance(entity, dict):
                raise ValueError(f"{at} is {_json_type(entity)}; expected {_INSTRUCTUIE_SHAPE}")
            name = _need(entity, "name", str, at, _INSTRUCTUIE_SHAPE)
            label = _need(entity, "type", str, at, _INSTRUCTUIE_SHAPE)
            if "pos" not in entity:
                mentions.append((name, label))
                continue
            pos = entity["pos"]
            if not (
                isinstance(pos, list)
                and len(pos) == 2
                and all(type(p) is int for p in pos)
                and 0 <= pos[0] < pos[1] <= len(text)
            ):
                raise ValueError(
                    f"{at}: pos {pos!r} is not [start, end] with 0 <= start < end <= "
                    f"{len(text)} (the sentence length); expected {_INSTRUCTUIE_SHAPE}"
                )
            if text[pos[0] : pos[1]] != name:
                raise ValueError(
                    f"{at}: pos {pos} covers {text[pos[0] : pos[1]]!r}, not the name {name!r}; "
                    "expected sentence[start:end] == name"
                )
            spans.append((pos[0], pos[1], label))
        records.append(_grounded_record(text, mentions, where, spans, dataset=dataset))
    return records


def read_uniner_conversations(path: str | Path, dataset: str = "pile-ner") -> list[NERRecord]:
    """Passages of UniNER conversation data (Pile-NER-type): one question per type, answered
    with a JSON list of mentions. Every type asked is in the schema, so types answered with
    ``[]`` are negatives."""
    path = Path(path)
    records = []
    for where, item in _json_items(path):
        record_id = str(_need(item, "id", (str, int), where, _UNINER_SHAPE))
        turns = _need(item, "conversations", list, where, _UNINER_SHAPE)
        at = f"{where} (id {record_id!r})"
        for k, turn in enumerate(turns):
            speaker = "human" if k % 2 == 0 else "gpt"
            if not isinstance(turn, dict) or turn.get("from") != speaker:
                raise ValueError(
                    f"{at}, turn {k}: {turn!r:.80} is not a {speaker} turn; expected turns "
                    f"alternating human and gpt in {_UNINER_SHAPE}"
                )
            _need(turn, "value", str, f"{at}, turn {k}", _UNINER_SHAPE)
        if not turns or not turns[0]["value"].startswith(_TEXT_PREFIX):
            first = turns[0]["value"][:40] if turns else "no turns"
            raise ValueError(f"{at}, turn 0: {first!r}; expected 'Text: <passage>'")
        if len(turns) % 2:
            raise ValueError(
                f"{at}: {len(turns)} turns, the last question unanswered; expected "
                "each human turn to be followed by a gpt turn"
            )
        text = turns[0]["value"][len(_TEXT_PREFIX) :]
        schema, mentions = [], []
        for k in range(2, len(turns), 2):
            question = _QUESTION.fullmatch(turns[k]["value"])
            if question is None:
                raise ValueError(
                    f"{at}, turn {k}: {turns[k]['value']!r} is not a type question; expected "
                    "'What describes <type> in the text?'"
                )
            label = question.group(1)
            answer = _mention_list(
                turns[k + 1]["value"], f"{at}, turn {k + 1}", "the answer", _UNINER_SHAPE
            )
            schema.append(label)
            mentions.extend((mention, label) for mention in answer)
        records.append(
            _grounded_record(
                text,
                mentions,
                where,
                dataset=dataset,
                schema=list(dict.fromkeys(schema)),
                id=record_id,
            )
        )
    return records


def read_slimer_jsonl(path: str | Path, dataset: str = "pile-ner") -> list[NERRecord]:
    """Passages of SLIMER's per-(passage, type) JSONL, rows grouped by the passage id before
    the ``:`` of ``doc_question_pairID``, in order of first appearance. The schema is every
    ``tagName`` asked of the passage, so types answered with ``[]`` are negatives."""
    path = Path(path)
    # passage id -> (location of its first row, text, {type: mentions})
    passages: dict[str, tuple[str, str, dict[str, list[str]]]] = {}
    for where, row in _json_items(path):
        pair = _need(row, "doc_question_pairID", str, where, _SLIMER_SHAPE)
        passage_id, colon, _ = pair.partition(":")
        if not colon or not passage_id:
            raise ValueError(
                f"{where}: doc_question_pairID {pair!r} has no passage id; expected "
                "'<passage id>:<question number>'"
            )
        label = _need(row, "tagName", str, where, _SLIMER_SHAPE)
        text = _need(row, "input", str, where, _SLIMER_SHAPE)
        output = _need(row, "output", str, where, _SLIMER_SHAPE)
        answer = _mention_list(output, where, "'output'", _SLIMER_SHAPE)
        first, known_text, types = passages.setdefault(passage_id, (where, text, {}))
        if known_text != text:
            raise ValueError(
                f"{where}: passage {passage_id!r} has another 'input' than at {first}; "
                "expected the same text in every row of a passage"
            )
        types.setdefault(label, []).extend(answer)
    return [
        _grounded_record(
            text,
            [(mention, label) for label, answer in types.items() for mention in answer],
            where,
            dataset=dataset,
            schema=list(types),
            id=passage_id,
        )
        for passage_id, (where, text, types) in passages.items()
    ]


def read_ner_cot_jsonl(path: str | Path) -> list[NERRecord]:
    """Sentences of the NER-CoT release: text, schema, gold mentions and the chain of thought
    (``reasoning``), which is itself training data. Mentions are grounded to every
    occurrence, and kept as listed in ``mentions``; an entity label outside the schema is an
    error. ``dataset`` may be null, as in the released file."""
    path = Path(path)
    records = []
    for where, item in _json_items(path):
        guid = str(_need(item, "guid", (str, int), where, _NER_COT_SHAPE))
        schema = _strings(
            _need(item, "schema", list, where, _NER_COT_SHAPE), where, "'schema'", _NER_COT_SHAPE
        )
        mentions = []
        for i, entity in enumerate(_need(item, "entities", list, where, _NER_COT_SHAPE)):
            at = f"{where}: entity {i}"
            if not isinstance(entity, dict):
                raise ValueError(f"{at} is {_json_type(entity)}; expected {_NER_COT_SHAPE}")
            mentions.append(
                (
                    _need(entity, "text", str, at, _NER_COT_SHAPE),
                    _need(entity, "label", str, at, _NER_COT_SHAPE),
                )
            )
        _check_schema(mentions, schema, where)
        records.append(
            _grounded_record(
                _need(item, "sentence", str, where, _NER_COT_SHAPE),
                mentions,
                where,
                dataset=_need(item, "dataset", (str, type(None)), where, _NER_COT_SHAPE) or "",
                schema=schema,
                reasoning=_need(item, "cot", str, where, _NER_COT_SHAPE),
                id=guid,
            )
        )
    return records


def _check_schema(mentions: Iterable[tuple[str, str]], schema: Sequence[str], where: str) -> None:
    outside = sorted({label for _, label in mentions} - set(schema))
    if outside:
        raise ValueError(
            f"{where}: entity labels {outside} are not in the schema {list(schema)}; expected "
            "every label to be one of the schema's types"
        )


def ner_cot_record(record: NERRecord, guid: str, cot: str) -> dict[str, Any]:
    """``record`` as a line of the NER-CoT release, so that ``read_ner_cot_jsonl`` reads it
    back unchanged: one entity per distinct (text, label), in order of offsets, then the
    unaligned mentions, which are kept rather than lost. Needs the record's schema."""
    if record.schema is None:
        raise ValueError(
            f"{record.source}: the record has no schema; NER-CoT needs the types asked, e.g. "
            "dataclasses.replace(record, schema=labels)"
        )
    mentions = dict.fromkeys(
        [(record.text[s:e], label) for s, e, label in sorted(record.entities)] + record.unaligned
    )
    _check_schema(mentions, record.schema, record.source)
    return {
        "guid": guid,
        "dataset": record.dataset,
        "sentence": record.text,
        "schema": list(record.schema),
        "cot": cot,
        "entities": [{"text": text, "label": label} for text, label in mentions],
    }


# --- spaCy DocBin --------------------------------------------------------------------------------


def read_docbin(
    path: str | Path, dataset: str = "", *, lang: str = "xx", spans_key: str | None = None
) -> list[NERRecord]:
    """Docs of a spaCy ``.spacy`` file, entities from ``doc.ents`` and, with ``spans_key``,
    also from ``doc.spans[spans_key]`` (which may overlap). ``lang`` picks the vocab."""
    path = Path(path)
    try:
        docs = list(DocBin().from_disk(path).get_docs(spacy.blank(lang).vocab))
    except ValueError as error:
        raise ValueError(
            f"{path}: cannot read it as a DocBin ({error}); expected a .spacy file written "
            "by DocBin.to_disk"
        ) from None
    if spans_key is not None and docs and not any(spans_key in doc.spans for doc in docs):
        keys = sorted({key for doc in docs for key in doc.spans})
        raise ValueError(f"{path}: no doc has spans_key {spans_key!r}; expected one of {keys}")
    records = []
    for i, doc in enumerate(docs):
        spans = [*doc.ents, *doc.spans.get(spans_key, ())]
        entities = sorted({(s.start_char, s.end_char, s.label_) for s in spans})
        tokens = [token.text for token in doc]
        records.append(NERRecord(doc.text, entities, f"{path}[{i}]", tokens, dataset=dataset))
    return records


# --- dispatch ------------------------------------------------------------------------------------

_READERS: dict[str, Callable[..., list[NERRecord]]] = {
    "bio": read_bio,
    "instructuie": read_instructuie_json,
    "uniner": read_uniner_conversations,
    "slimer": read_slimer_jsonl,
    "ner-cot": read_ner_cot_jsonl,
    "docbin": read_docbin,
}
# Keys that identify a JSON format in its first record; NER-CoT before InstructUIE, whose
# keys it includes.
_JSON_SIGNATURES = (
    ("ner-cot", {"guid", "sentence", "schema", "entities"}),
    ("instructuie", {"sentence", "entities"}),
    ("uniner", {"conversations"}),
    ("slimer", {"doc_question_pairID", "input", "output"}),
)


def read_records(path: str | Path, format: str = "auto", **kwargs: Any) -> list[NERRecord]:
    """Records of ``path`` in any of ``READ_FORMATS``; ``kwargs`` go to the reader.

    ``"auto"`` goes by the suffix (``.spacy``: DocBin; ``.txt``, ``.bio``, ``.conll``,
    ``.tsv``: BIO) and, for ``.json`` and ``.jsonl``, by the keys of the first record.
    """
    path = Path(path)
    if format == "auto":
        detected = _detect_format(path)
        if detected is None:  # no record to tell the format by, and none to read
            return []
        format = detected
    if format not in _READERS:
        raise ValueError(
            f"{path}: unknown format {format!r}; expected 'auto' or one of {READ_FORMATS}"
        )
    return _READERS[format](path, **kwargs)


def _detect_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".spacy":
        return "docbin"
    if suffix in _BIO_SUFFIXES:
        return "bio"
    if suffix not in (".json", ".jsonl"):
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {suffix!r} (auto knows .spacy, "
            f"{', '.join(_BIO_SUFFIXES)}, .json and .jsonl); pass format= one of {READ_FORMATS}"
        )
    first = next(_json_items(path), None)
    if first is None:
        return None
    where, item = first
    for name, keys in _JSON_SIGNATURES:
        if keys <= item.keys():
            return name
    raise ValueError(
        f"{where}: keys {sorted(item)} match no JSON format (ner-cot, instructuie, uniner, "
        f"slimer); pass format= one of {READ_FORMATS}"
    )
