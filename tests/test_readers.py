"""The readers on the real benchmark files, on files converted from them and on snippets."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_reasoningner.benchmark.readers import (
    CROSSNER_DATASETS,
    READ_FORMATS,
    NERRecord,
    decode_bio,
    load_definitions,
    load_label_map,
    ner_cot_record,
    read_bio,
    read_docbin,
    read_instructuie_json,
    read_ner_cot_jsonl,
    read_records,
    read_slimer_jsonl,
    read_uniner_conversations,
    relabel,
)

DATA = Path(
    os.environ.get("REASONINGNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA}")


def _blocks(path: Path) -> list[list[str]]:
    """Sentences counted independently of the reader: blank-line separated, DOCSTART dropped."""
    text = path.read_text(encoding="utf-8")
    blocks = [b.split("\n") for b in text.strip("\n").split("\n\n")]
    return [b for b in blocks if not b[0].startswith("-DOCSTART-")]


def _types(path: Path, count: str) -> Counter[str]:
    types = json.loads(path.read_text(encoding="utf-8"))["types"].values()
    return Counter({t["bio_tag"]: t[count] for t in types})


def _check_offsets(records) -> None:
    for record in records:
        assert record.text == " ".join(record.tokens)
        for start, end, _ in record.entities:
            # Entities are whole tokens: they start and end at token boundaries.
            assert start == 0 or record.text[start - 1] == " "
            assert end == len(record.text) or record.text[end] == " "


@needs_data
@pytest.mark.parametrize("domain", CROSSNER_DATASETS)
def test_crossner_dev_token_first(domain: str) -> None:
    records = read_bio(DATA / domain / "dev.txt")
    assert len(records) == len(_blocks(DATA / domain / "dev.txt"))
    assert Counter(label for r in records for *_, label in r.entities) == _types(
        DATA / domain / "labels.json", "dev_count"
    )
    _check_offsets(records)


@needs_data
def test_crossner_first_sentence() -> None:
    first = read_bio(DATA / "crossner_ai" / "dev.txt")[0]
    assert first.source.endswith("crossner_ai/dev.txt:1")
    assert [(first.text[s:e], label) for s, e, label in first.entities] == [
        ("accuracy", "metrics"),
        ("error rate", "metrics"),
    ]


@needs_data
def test_conll2003_four_columns() -> None:
    # The chunk column (B-NP, I-VP, O) also looks like BIO: the tag is the last column.
    records = read_bio(DATA / "conll2003" / "dev.txt")
    assert len(records) == len(_blocks(DATA / "conll2003" / "dev.txt")) == 3250
    counts = Counter(label for r in records for *_, label in r.entities)
    assert counts == _types(DATA / "conll2003" / "labels.json", "dev_count")
    assert sum(counts.values()) == 5942
    assert records[0].text.startswith("CRICKET - LEICESTERSHIRE")
    assert [(records[2].text[s:e], label) for s, e, label in records[2].entities] == [
        ("West Indian", "MISC"),
        ("Phil Simmons", "PER"),
        ("Leicestershire", "ORG"),
        ("Somerset", "ORG"),
    ]
    _check_offsets(records)


@needs_data
def test_conll2003_crossner_variant() -> None:
    records = read_bio(DATA / "conll2003" / "crossner_variant" / "dev.txt")
    assert len(records) == len(_blocks(DATA / "conll2003" / "crossner_variant" / "dev.txt"))
    assert records[0].entities == [(10, 24, "organisation")]


@needs_data
@pytest.mark.parametrize("dataset", ["mit_movie", "mit_restaurant"])
def test_mit_tag_first(dataset: str) -> None:
    records = read_bio(DATA / dataset / "train.txt")
    assert len(records) == len(_blocks(DATA / dataset / "train.txt"))
    counts = Counter(label for r in records for *_, label in r.entities)
    assert counts == _types(DATA / dataset / "labels.json", "train_count")
    _check_offsets(records)


@needs_data
def test_mit_movie_first_sentence() -> None:
    first = read_bio(DATA / "mit_movie" / "train.txt")[0]
    assert first.tokens == ["what", "movies", "star", "bruce", "willis"]
    assert first.entities == [(17, 29, "ACTOR")]


def test_iob1_and_bioes_decoding() -> None:
    # IOB1: I- after O or after another type starts an entity; B- only splits same-type runs.
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-MISC"]
    assert decode_bio(tags) == [
        (0, 2, "PER"),
        (3, 4, "LOC"),
        (4, 6, "LOC"),
        (6, 7, "ORG"),
        (8, 9, "MISC"),
    ]
    assert decode_bio(["B-X", "I-X", "B-X", "O"]) == [(0, 2, "X"), (2, 3, "X")]
    assert decode_bio(["S-X", "B-Y", "E-Y", "I-Y", "E-Z"]) == [
        (0, 1, "X"),
        (1, 3, "Y"),
        (3, 4, "Y"),
        (4, 5, "Z"),
    ]


def test_iob1_file(tmp_path: Path) -> None:
    path = tmp_path / "iob1.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\ncall NN I-NP O\n\n"
        "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\nand CC O O\nJohn NNP I-NP I-PER\n"
        "Paris NNP I-NP I-LOC\nBonn NNP I-NP B-LOC\n",
        encoding="utf-8",
    )
    first, second = read_bio(path)
    assert first.source == f"{path}:3"
    assert [(first.text[s:e], t) for s, e, t in first.entities] == [
        ("EU", "ORG"),
        ("German", "MISC"),
    ]
    assert [(second.text[s:e], t) for s, e, t in second.entities] == [
        ("Peter Blackburn", "PER"),
        ("John", "PER"),
        ("Paris", "LOC"),
        ("Bonn", "LOC"),
    ]


def test_tag_first_snippet(tmp_path: Path) -> None:
    path = tmp_path / "mit.bio"
    path.write_text(
        "O\tshow\nB-ACTOR\tdrew\nI-ACTOR\tbarrymore\r\n\n\nB-YEAR\t1980s\n", encoding="utf-8"
    )
    records = read_bio(path)
    assert [(r.text, r.entities) for r in records] == [
        ("show drew barrymore", [(5, 19, "ACTOR")]),
        ("1980s", [(0, 5, "YEAR")]),
    ]


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("Paris\tB-LOC\nis\tO\tO\n", 2, "3 columns, expected 2"),
        ("Paris\tB-LOC\n\tO\n", 2, "empty field"),
        ("Paris\n", 1, "one column"),
        ("Paris\tB-LOC\nis\tO\nnice\tX-ADJ\n", 3, "'X-ADJ' is not a BIO tag"),
        ("Paris\tB-LOC\nis\tbeautiful\n", 2, "'beautiful' is not a BIO tag"),
    ],
)
def test_malformed_input(tmp_path: Path, content: str, line: int, problem: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.txt:{line}: .*{problem}") as error:
        read_bio(path)
    assert str(path) in str(error.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    assert read_bio(path) == []


@needs_data
def test_label_maps_and_definitions() -> None:
    labels = DATA / "crossner_ai" / "labels.json"
    names = load_label_map(labels)
    assert names["programlang"] == "program language" and names["misc"] == "else"
    uniner = load_label_map(labels, naming="uniner_name")
    assert "misc" not in uniner and uniner["organisation"] == "organization"
    assert (
        load_label_map(DATA / "mit_restaurant" / "labels.json")["Restaurant_Name"]
        == "Restaurant Name"
    )
    definitions = load_definitions(labels, naming="uniner_name")
    assert set(definitions) == set(uniner.values())
    assert definitions["algorithm"].startswith("'algorithm' entities refer to")
    gollie = load_definitions(labels, naming="natural_name", field="definition_gollie")
    assert gollie["miscellaneous"]
    with pytest.raises(ValueError, match="has no 'nonexistent_name'"):
        load_label_map(labels, naming="nonexistent_name")


@needs_data
def test_relabel_drops_unmapped_types() -> None:
    records = read_bio(DATA / "crossner_ai" / "dev.txt")
    renamed = relabel(records, load_label_map(DATA / "crossner_ai" / "labels.json", "uniner_name"))
    counts = Counter(label for r in renamed for *_, label in r.entities)
    assert "misc" not in counts and "else" not in counts
    assert counts["organization"] == 94 and counts["program language"] == 35


# --- The other corpus formats ------------------------------------------------------------------

SLIMER = DATA / "pile-ner" / "slimer_subset" / "validation_FalseDef.jsonl"


def _content(record: NERRecord) -> NERRecord:
    """The record without its location, to compare records read from different files."""
    return dataclasses.replace(record, source="")


def _slimer_passages() -> dict[str, tuple[str, dict[str, list[str]]]]:
    """SLIMER rows grouped by passage independently of the reader: id -> (text, type -> mentions)."""
    passages: dict[str, tuple[str, dict[str, list[str]]]] = {}
    for line in SLIMER.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        passage = passages.setdefault(row["doc_question_pairID"].split(":")[0], (row["input"], {}))
        passage[1][row["tagName"]] = json.loads(row["output"])
    return passages


def _crossner_ai(n: int = 200) -> list[NERRecord]:
    return read_bio(DATA / "crossner_ai" / "dev.txt", dataset="crossner_ai")[:n]


def _write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


@needs_data
def test_slimer_real_file() -> None:
    records = read_slimer_jsonl(SLIMER)
    passages = _slimer_passages()
    assert len(records) == len(passages) == 882
    assert [r.id for r in records] == list(passages)  # first-appearance order
    assert sum(len(r.schema) for r in records) == 1320  # one row per (passage, type)
    assert len({label for r in records for label in r.schema}) == 384
    assert all(r.dataset == "pile-ner" and not r.unaligned for r in records)
    for record in records:
        text, types = passages[record.id]
        assert record.text == text and record.schema == list(types)
        # Every mention is found, and every span found is one of the passage's mentions.
        named = {(m, label) for label, mentions in types.items() for m in mentions}
        assert {(record.text[s:e], label) for s, e, label in record.entities} == named
    assert sum(not r.entities for r in records) == 326  # passages with only negative types
    first = records[0]
    assert (first.id, first.schema, first.entities) == ("42805", ["court"], [])
    assert first.source == f"{SLIMER}:1"


@needs_data
def test_slimer_month_passage() -> None:
    record = next(r for r in read_slimer_jsonl(SLIMER) if r.id == "43340")
    assert record.source == f"{SLIMER}:2"
    assert record.schema == ["month", "medication"]  # medication: a negative type
    assert record.entities == [
        (990, 996, "month"),
        (1024, 1031, "month"),
        (1036, 1044, "month"),
    ]
    assert [record.text[s:e] for s, e, _ in record.entities] == ["August", "January", "February"]


@needs_data
def test_slimer_grounds_every_whole_word_occurrence() -> None:
    records = {r.id: r for r in read_slimer_jsonl(SLIMER)}
    # A one-letter mention grounds only where it stands as a word, never inside words.
    for record in records.values():
        for start, end, _ in record.entities:
            text = record.text
            assert not (start > 0 and text[start - 1].isalnum() and text[start].isalnum())
            assert not (end < len(text) and text[end].isalnum() and text[end - 1].isalnum())
    assert sum(len(r.entities) for r in records.values()) == 2434  # 1582 distinct mentions


@needs_data
def test_instructuie_from_crossner(tmp_path: Path) -> None:
    gold = _crossner_ai()

    def item(record: NERRecord, with_pos: bool) -> dict:
        entities = [
            {"name": record.text[s:e], "type": label, **({"pos": [s, e]} if with_pos else {})}
            for s, e, label in record.entities
        ]
        return {"sentence": record.text, "entities": entities}

    with_pos = tmp_path / "with_pos.json"
    with_pos.write_text(json.dumps([item(r, True) for r in gold], indent=1), encoding="utf-8")
    records = read_instructuie_json(with_pos, dataset="crossner_ai")
    assert [(r.text, r.entities) for r in records] == [(r.text, r.entities) for r in gold]
    assert records[3].source == f"{with_pos}[3]"
    assert all(r.schema is None and not r.unaligned for r in records)

    without = _write_jsonl(tmp_path / "without_pos.jsonl", [item(r, False) for r in gold])
    grounded = read_instructuie_json(without)
    assert grounded[3].source == f"{without}:4"
    same = 0
    for record, reference in zip(grounded, gold, strict=True):
        assert record.text == reference.text and not record.unaligned
        # Without offsets every occurrence of a mention is an entity: a superset of the gold,
        # equal when no mention recurs unannotated.
        assert set(reference.entities) <= set(record.entities)
        same += record.entities == reference.entities
    assert 150 < same < 200


@needs_data
def test_uniner_from_slimer(tmp_path: Path) -> None:
    conversations = []
    for passage_id, (text, types) in _slimer_passages().items():
        turns = [
            {"from": "human", "value": f"Text: {text}"},
            {"from": "gpt", "value": "I've read this text."},
        ]
        for label, mentions in types.items():
            turns.append({"from": "human", "value": f"What describes {label} in the text?"})
            turns.append({"from": "gpt", "value": json.dumps(mentions)})
        conversations.append({"id": passage_id, "conversations": turns})
    path = tmp_path / "pile_ner_type.json"
    path.write_text(json.dumps(conversations), encoding="utf-8")
    records = read_uniner_conversations(path)
    assert records[5].source == f"{path}[5]"
    assert list(map(_content, records)) == list(map(_content, read_slimer_jsonl(SLIMER)))


@needs_data
def test_ner_cot_round_trip(tmp_path: Path) -> None:
    labels = load_label_map(DATA / "crossner_ai" / "labels.json")
    crossner = [
        dataclasses.replace(r, schema=sorted(set(labels.values())))
        for r in relabel(_crossner_ai(50), labels)
    ]
    # A mention the text lacks survives the round trip in ``unaligned``.
    crossner[0].unaligned.append(("no such mention", "algorithm"))
    records = [*read_slimer_jsonl(SLIMER)[:100], *crossner]
    lines = [ner_cot_record(r, f"guid-{i}", f"cot {i}") for i, r in enumerate(records)]
    assert lines[0].keys() == {"guid", "dataset", "sentence", "schema", "cot", "entities"}
    path = _write_jsonl(tmp_path / "ner_cot.jsonl", lines)
    read = read_ner_cot_jsonl(path)
    assert read[0].source == f"{path}:1"
    expected = [
        dataclasses.replace(r, id=f"guid-{i}", reasoning=f"cot {i}", tokens=None)
        for i, r in enumerate(records)
    ]
    # SLIMER records are grounded to every occurrence already: identical after the trip.
    assert list(map(_content, read[:100])) == list(map(_content, expected[:100]))
    # BIO gold marks single occurrences; NER-CoT names mentions, which ground everywhere.
    for record, reference in zip(read[100:], expected[100:], strict=True):
        assert set(reference.entities) <= set(record.entities)
        assert _content(record) == dataclasses.replace(
            _content(reference), entities=record.entities
        )
    # Read -> write -> read is stable, and writes the same lines.
    again = [ner_cot_record(r, r.id, r.reasoning) for r in read]
    assert again[:100] == lines[:100]
    reread = read_ner_cot_jsonl(_write_jsonl(tmp_path / "again.jsonl", again))
    assert list(map(_content, reread)) == list(map(_content, read))
    assert [ner_cot_record(r, r.id, r.reasoning) for r in reread] == again
    assert read[100].unaligned == [("no such mention", "algorithm")]
    month = next(line for line in lines if "August" in line["sentence"] and line["entities"])
    assert month["entities"][:3] == [
        {"text": "August", "label": "month"},
        {"text": "January", "label": "month"},
        {"text": "February", "label": "month"},
    ]


def test_ner_cot_record_collapses_repeated_mentions() -> None:
    record = NERRecord(
        "Paris and Paris , Lyon",
        [(18, 22, "city"), (10, 15, "city"), (0, 5, "city"), (0, 5, "capital")],
        "x:1",
        schema=["city", "capital", "river"],
    )
    assert ner_cot_record(record, "g", "c")["entities"] == [
        {"text": "Paris", "label": "capital"},
        {"text": "Paris", "label": "city"},
        {"text": "Lyon", "label": "city"},
    ]
    with pytest.raises(ValueError, match=r"x:1: the record has no schema"):
        ner_cot_record(dataclasses.replace(record, schema=None), "g", "c")
    with pytest.raises(ValueError, match=r"x:1: entity labels \['capital'\] are not in the schema"):
        ner_cot_record(dataclasses.replace(record, schema=["city"]), "g", "c")


@needs_data
def test_docbin_from_conll(tmp_path: Path) -> None:
    gold = read_bio(DATA / "conll2003" / "dev.txt")[:300]
    vocab = spacy.blank("en").vocab
    docs = []
    for record in gold:
        spaces = [True] * (len(record.tokens) - 1) + [False]
        doc = Doc(vocab, words=record.tokens, spaces=spaces)
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in record.entities]
        docs.append(doc)
    # An overlapping span group on one doc: the words of its first entity.
    first_ent = next(doc for doc in docs if doc.ents)
    doc_index = docs.index(first_ent)
    extra = first_ent.ents[0]
    first_ent.spans["sc"] = [Span(first_ent, extra.start, extra.start + 1, label="HEAD")]
    path = tmp_path / "conll_dev.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(path)

    records = read_docbin(path, dataset="conll2003")
    assert [(r.text, r.entities, r.tokens) for r in records] == [
        (r.text, r.entities, r.tokens) for r in gold
    ]
    assert records[7].source == f"{path}[7]" and records[7].dataset == "conll2003"
    with_spans = read_docbin(path, lang="en", spans_key="sc")
    head = (extra.start_char, extra.start_char + len(extra[0].text), "HEAD")
    assert with_spans[doc_index].entities == sorted([*gold[doc_index].entities, head])
    assert [r.entities for i, r in enumerate(with_spans) if i != doc_index] == [
        r.entities for i, r in enumerate(gold) if i != doc_index
    ]
    with pytest.raises(ValueError, match=r"no doc has spans_key 'nope'; expected one of \['sc'\]"):
        read_docbin(path, spans_key="nope")
    broken = tmp_path / "broken.spacy"
    broken.write_bytes(b"not a docbin")
    with pytest.raises(ValueError, match=r"broken\.spacy: cannot read it as a DocBin"):
        read_docbin(broken)


@needs_data
def test_auto_detection(tmp_path: Path) -> None:
    conll = DATA / "conll2003" / "dev.txt"
    assert read_records(conll) == read_bio(conll)
    assert read_records(SLIMER) == read_slimer_jsonl(SLIMER)
    gold = _crossner_ai(20)
    instructuie = tmp_path / "uie.json"
    instructuie.write_text(
        json.dumps(
            [
                {"sentence": r.text, "entities": [{"name": r.text[s:e], "type": t}]}
                for r in gold
                for s, e, t in r.entities[:1]
            ]
        ),
        encoding="utf-8",
    )
    assert read_records(instructuie) == read_instructuie_json(instructuie)
    schema = sorted({t for r in gold for *_, t in r.entities})
    cot = _write_jsonl(
        tmp_path / "cot.jsonl",
        [ner_cot_record(dataclasses.replace(r, schema=schema), "g", "c") for r in gold],
    )
    assert read_records(cot) == read_ner_cot_jsonl(cot)
    uniner = _write_jsonl(
        tmp_path / "uniner.jsonl",
        [{"id": 1, "conversations": [{"from": "human", "value": "Text: a b"}]}],
    )
    with pytest.raises(ValueError, match=r"uniner\.jsonl:1 \(id '1'\): 1 turns"):
        read_records(uniner)  # detected as UniNER, then found incomplete
    spacy_file = tmp_path / "x.spacy"
    DocBin(docs=[spacy.blank("xx")("a b")]).to_disk(spacy_file)
    assert [r.text for r in read_records(spacy_file)] == ["a b"]
    bio = tmp_path / "x.conll"
    bio.write_text("Paris\tB-LOC\n", encoding="utf-8")
    assert read_records(bio, dataset="d")[0].dataset == "d"
    assert read_records(bio, format="bio") == read_bio(bio)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert read_records(empty) == []


def test_auto_detection_failures(tmp_path: Path) -> None:
    odd = tmp_path / "data.xml"
    odd.write_text("<x/>", encoding="utf-8")
    with pytest.raises(ValueError, match=r"suffix '\.xml'.*pass format= one of \('bio',") as error:
        read_records(odd)
    assert all(name in str(error.value) for name in READ_FORMATS)
    unknown = _write_jsonl(tmp_path / "unknown.jsonl", [{"text": "a", "labels": []}])
    with pytest.raises(ValueError, match=r"unknown\.jsonl:1: keys \['labels', 'text'\] match no"):
        read_records(unknown)
    with pytest.raises(ValueError, match=r"unknown format 'brat'; expected 'auto' or one of"):
        read_records(unknown, format="brat")


def test_grounding_without_offsets(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "uie.jsonl",
        [
            {
                "sentence": "Paris was a  New York hit in paris .",
                "entities": [
                    {"name": "Paris", "type": "city"},  # exact: the lowercase one is not taken
                    {"name": "new york", "type": "city"},  # fuzzy: case and whitespace differ
                    {"name": "a", "type": "letter"},  # as a word only, not inside "was"
                    {"name": "London", "type": "city"},  # nowhere: reported
                    {"name": " ", "type": "city"},  # empty: would match everywhere
                    {"name": "hit", "type": "work", "pos": [22, 25]},
                ],
            }
        ],
    )
    (record,) = read_instructuie_json(path)
    assert [(record.text[s:e], label) for s, e, label in record.entities] == [
        ("Paris", "city"),
        ("a", "letter"),
        ("New York", "city"),
        ("hit", "work"),
    ]
    assert record.unaligned == [("London", "city"), (" ", "city")]


SLIMER_ROW = {
    "doc_question_pairID": "7:0",
    "tagName": "city",
    "input": "Paris is nice",
    "instruction": "Extract the Named Entities of type CITY.",
    "output": '["Paris"]',
}
UNINER_TURNS = [
    {"from": "human", "value": "Text: Paris is nice"},
    {"from": "gpt", "value": "I've read this text."},
    {"from": "human", "value": "What describes city in the text?"},
    {"from": "gpt", "value": '["Paris"]'},
]
COT = {
    "guid": "g1",
    "dataset": "d",
    "sentence": "Paris is nice",
    "schema": ["city"],
    "cot": "...",
    "entities": [{"text": "Paris", "label": "city"}],
}


@pytest.mark.parametrize(
    ("reader", "name", "content", "where", "problem"),
    [
        (
            read_instructuie_json,
            "bad.jsonl",
            '{"sentence": "a", "entities": []}\n{"sentence": "b", "ent\n',
            ":2",
            "invalid JSON .*expected one JSON object per line",
        ),
        (
            read_instructuie_json,
            "bad.json",
            '[{"sentence": "a", "entities": []},\n {"sentence": "b", }]',
            ":2",
            "invalid JSON .*expected a JSON list of objects",
        ),
        (read_instructuie_json, "bad.json", "[1]", r"\[0\]", "an integer, expected a JSON object"),
        (
            read_instructuie_json,
            "bad.json",
            '[{"sentence": "a", "entities": []}, {"entities": []}]',
            r"\[1\]",
            r"missing key 'sentence'; expected a JSON list or JSONL of \{\"sentence\"",
        ),
        (
            read_instructuie_json,
            "bad.jsonl",
            '{"sentence": "a", "entities": "a"}\n',
            ":1",
            "'entities' is a string; expected",
        ),
        (
            read_instructuie_json,
            "bad.jsonl",
            '\n{"sentence": "Paris is nice", "entities": [{"name": "Paris", "type": "city", "pos": [1, 6]}]}\n',
            ":2",
            r"entity 0: pos \[1, 6\] covers 'aris ', not the name 'Paris'; expected sentence\[start:end\] == name",
        ),
        (
            read_instructuie_json,
            "bad.jsonl",
            '{"sentence": "Paris", "entities": [{"name": "Paris", "type": "city", "pos": [0, 9]}]}',
            ":1",
            r"entity 0: pos \[0, 9\] is not \[start, end\] with 0 <= start < end <= 5",
        ),
        (
            read_instructuie_json,
            "bad.jsonl",
            '{"sentence": "Paris", "entities": [{"name": "Paris", "type": null}]}',
            ":1",
            "entity 0: 'type' is null; expected",
        ),
        (
            read_uniner_conversations,
            "bad.json",
            json.dumps(
                [
                    {
                        "id": "x",
                        "conversations": [*UNINER_TURNS[:3], {"from": "gpt", "value": "[Paris"}],
                    }
                ]
            ),
            r"\[0\] \(id 'x'\), turn 3",
            "the answer is not valid JSON",
        ),
        (
            read_uniner_conversations,
            "bad.json",
            json.dumps(
                [{"id": "x", "conversations": [*UNINER_TURNS[:3], {"from": "gpt", "value": "[1]"}]}]
            ),
            r"\[0\] \(id 'x'\), turn 3",
            "the answer is not a list of strings",
        ),
        (
            read_uniner_conversations,
            "bad.json",
            json.dumps(
                [
                    {
                        "id": "x",
                        "conversations": [
                            *UNINER_TURNS[:2],
                            {"from": "human", "value": "Which cities?"},
                            UNINER_TURNS[3],
                        ],
                    }
                ]
            ),
            r"\[0\] \(id 'x'\), turn 2",
            "'Which cities\\?' is not a type question; expected 'What describes <type> in the text\\?'",
        ),
        (
            read_uniner_conversations,
            "bad.json",
            json.dumps([{"id": "x", "conversations": UNINER_TURNS[1:]}]),
            r"\[0\] \(id 'x'\), turn 0",
            "is not a human turn",
        ),
        (
            read_slimer_jsonl,
            "bad.jsonl",
            json.dumps(SLIMER_ROW) + "\n" + json.dumps({**SLIMER_ROW, "doc_question_pairID": "7"}),
            ":2",
            "doc_question_pairID '7' has no passage id; expected '<passage id>:<question number>'",
        ),
        (
            read_slimer_jsonl,
            "bad.jsonl",
            json.dumps(SLIMER_ROW) + "\n" + json.dumps({**SLIMER_ROW, "input": "Lyon"}),
            ":2",
            "passage '7' has another 'input' than at .*bad.jsonl:1",
        ),
        (
            read_slimer_jsonl,
            "bad.jsonl",
            json.dumps({**SLIMER_ROW, "output": "Paris"}),
            ":1",
            "'output' is not valid JSON",
        ),
        (
            read_ner_cot_jsonl,
            "bad.jsonl",
            json.dumps({**COT, "entities": [{"text": "Paris", "label": "town"}]}),
            ":1",
            r"entity labels \['town'\] are not in the schema \['city'\]",
        ),
        (
            read_ner_cot_jsonl,
            "bad.jsonl",
            json.dumps({k: v for k, v in COT.items() if k != "cot"}),
            ":1",
            "missing key 'cot'",
        ),
    ],
)
def test_malformed_json_input(
    tmp_path: Path, reader, name: str, content: str, where: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}{where}:? .*{problem}"):
        reader(path)


def test_well_formed_snippets(tmp_path: Path) -> None:
    slimer = _write_jsonl(
        tmp_path / "s.jsonl", [SLIMER_ROW, {**SLIMER_ROW, "tagName": "river", "output": "[]"}]
    )
    (record,) = read_slimer_jsonl(slimer)
    assert (record.id, record.schema, record.entities) == ("7", ["city", "river"], [(0, 5, "city")])
    uniner = _write_jsonl(tmp_path / "u.jsonl", [{"id": 3, "conversations": UNINER_TURNS}])
    assert list(map(_content, read_uniner_conversations(uniner, dataset="pile-ner"))) == [
        dataclasses.replace(_content(record), id="3", schema=["city"])
    ]
    (cot,) = read_ner_cot_jsonl(_write_jsonl(tmp_path / "c.jsonl", [COT]))
    assert (cot.id, cot.dataset, cot.reasoning, cot.entities) == (
        "g1",
        "d",
        "...",
        [(0, 5, "city")],
    )


def test_relabel_renames_schema_and_unaligned() -> None:
    record = NERRecord(
        "Paris",
        [(0, 5, "LOC")],
        "x:1",
        dataset="d",
        schema=["LOC", "MISC", "PER"],
        definitions={"LOC": "places", "MISC": "other"},
        unaligned=[("Lyon", "LOC"), ("x", "MISC")],
    )
    (renamed,) = relabel([record], {"LOC": "location", "PER": "person"})
    assert renamed.entities == [(0, 5, "location")]
    assert renamed.schema == ["location", "person"]
    assert renamed.definitions == {"location": "places"}
    assert renamed.unaligned == [("Lyon", "location")]
    assert renamed.dataset == "d" and renamed.tokens is None
