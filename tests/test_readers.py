"""The BIO reader on the real benchmark files and on hand-written snippets."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from spacy_reasoningner.readers import (
    CROSSNER_DATASETS,
    decode_bio,
    load_definitions,
    load_label_map,
    read_bio,
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
