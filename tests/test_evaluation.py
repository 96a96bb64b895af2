"""Evaluation: the paper's string metric and spaCy's offset metric on real benchmark
sentences, answered by a scripted model, plus the overlap guard, outputs and the stage."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import spacy

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.benchmark import (
    EvalSet,
    OverlapError,
    eval_set_from_file,
    evaluate,
    load_eval_set,
    read_training_texts,
)
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import ChatMessages, render_completion

from ._data import DATA, needs_data
from ._scripted_backend import ScriptedBackend, prompt_text, save_scripted_pipeline

# Real crossner_ai dev sentences (file line numbers) that show what the metrics do.
WITH_MISC = "dev.txt:16"  # "classification algorithms" is misc
REPEATED = "dev.txt:2048"  # "Planner" (product) is annotated twice
OTHER_OCCURRENCE = "dev.txt:833"  # "India" is a country, but not inside "Digital India"


@pytest.fixture(scope="module")
def ai() -> EvalSet:
    return load_eval_set(DATA, "crossner_ai")


def one(eval_set: EvalSet, line: str) -> EvalSet:
    """The set restricted to the sentence starting at ``line`` of its file."""
    [record] = [r for r in eval_set.records if r.source.endswith(f"/{line}")]
    return dataclasses.replace(eval_set, records=[record])


def gold_answers(records: Sequence[NERRecord]) -> dict[str, dict[str, list[str]]]:
    answers: dict[str, dict[str, list[str]]] = {}
    for record in records:
        grouped = answers.setdefault(record.text, {})
        for start, end, label in record.entities:
            grouped.setdefault(label, []).append(record.text[start:end])
    return answers


def oracle(
    eval_sets: Sequence[EvalSet],
    extra: dict[str, list[str]] | None = None,
    reasoning: str = "reasoning here",
) -> Callable[[str], str]:
    """A model answering gold for every sentence of the sets (plus ``extra`` mentions)."""
    answers = {}
    for eval_set in eval_sets:
        answers.update(gold_answers(eval_set.records))

    def answer(text: str) -> str:
        entities = {k: list(v) for k, v in answers[text].items()}
        for label, mentions in (extra or {}).items():
            entities.setdefault(label, []).extend(mentions)
        return render_completion(reasoning, json.dumps({"entities": entities}))

    return answer


def scripted_nlp(answer: Callable[[str], str]) -> spacy.language.Language:
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={"labels": ["person"], "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}},
    )
    pipe.backend = ScriptedBackend(answer)
    return nlp


@needs_data
def test_perfect_answers_score_100_with_each_datasets_labels():
    sets = [
        load_eval_set(DATA, name, limit=4, seed=1)
        for name in ("crossner_ai", "conll2003", "mit_restaurant")
    ]
    nlp = scripted_nlp(oracle(sets))
    result = evaluate(nlp, sets, limit=4, seed=1)
    for d in result.datasets:
        assert d.sentences == 4
        assert (d.reference.f1, d.grounded.f1, d.offset.f1) == (100.0, 100.0, 100.0), d.dataset
        assert d.unaligned == d.unparsed == d.truncated == d.not_json == 0
    ai, conll, restaurant = result.datasets
    # instructuie names, natural names for CoNLL (placeholders otherwise), misc-like dropped.
    assert "program language" in ai.labels and "else" not in ai.labels
    assert conll.labels == ["person", "organization", "location"]
    assert "Restaurant Name" in restaurant.labels
    assert "seeded slice of train.txt" in restaurant.note
    # CoNLL-2003 is reported apart from the zero-shot mean, as in the paper.
    assert set(result.averages()) == {"zero-shot"}
    assert result.averages()["zero-shot"]["reference"]["f1"] == 100.0
    assert result.headline()["apart"] == {"conll2003": 100.0}
    assert "| reference F1 | grounded P |" in result.to_markdown()
    assert nlp.get_pipe("reasoning_ner").labels == ("person",)  # restored afterwards


@needs_data
def test_a_sample_without_gold_or_prediction_stays_out_of_the_mean(ai: EvalSet):
    """--limit 1 on a sparse set can draw a sentence with no gold entity: when the model
    names nothing either, F1 is 0/0, left out of the means and said so, not counted as 0."""
    scored = one(ai, OTHER_OCCURRENCE)
    [record] = scored.records
    empty = dataclasses.replace(record, entities=[], text=record.text + " (copy)")
    blank = dataclasses.replace(scored, name="crossner_music", records=[empty])
    answers = oracle([scored])
    nlp = scripted_nlp(lambda text: answers(text) if text in record.text else '{"entities": {}}')
    result = evaluate(nlp, [scored, blank])
    assert [d.undefined for d in result.datasets] == [False, True]
    assert result.datasets[1].reference.f1 == 0.0  # per set as reported, but not averaged
    assert result.averages()["zero-shot"]["reference"]["f1"] == 100.0
    headline = result.headline()
    assert headline["f1"] == 100.0 and headline["datasets"] == {"crossner_ai": 100.0}
    assert headline["undefined"] == ["crossner_music"]
    assert (
        "F1 undefined (no gold entity, none predicted), left out of the means: crossner_music"
        in (result.to_markdown())
    )


def test_labels_of_the_component_are_restored_after_evaluation(tmp_path: Path):
    bio = tmp_path / "mine" / "test.bio"
    bio.parent.mkdir()
    bio.write_text("Alice\tB-PER\nvisited\tO\nParis\tB-LOC\n")
    eval_set = eval_set_from_file(bio)
    for labels in (["person"], None):
        nlp = scripted_nlp(oracle([eval_set]))
        pipe = nlp.get_pipe("reasoning_ner")
        pipe.set_labels(labels)
        [d] = evaluate(nlp, [eval_set]).datasets
        assert d.labels == ["LOC", "PER"] and d.grounded.f1 == d.reference.f1 == 100.0
        assert pipe.cfg["labels"] == labels  # none stays none


@needs_data
def test_sampling_is_seeded_and_keeps_file_order():
    first = load_eval_set(DATA, "crossner_music", limit=5, seed=3)
    again = load_eval_set(DATA, "crossner_music", limit=5, seed=3)
    other = load_eval_set(DATA, "crossner_music", limit=5, seed=4)
    assert [r.source for r in first.records] == [r.source for r in again.records]
    assert [r.source for r in first.records] != [r.source for r in other.records]
    lines = [int(r.source.rsplit(":", 1)[1]) for r in first.records]
    assert lines == sorted(lines)


@needs_data
def test_misc_is_excluded_from_schema_gold_and_predictions(ai: EvalSet):
    misc = one(ai, WITH_MISC)
    assert not any(label in ("else", "misc") for label in misc.labels)
    assert [label for *_, label in misc.records[0].entities].count("algorithm") == 3
    # The model naming the misc mention under a misc-like label: not an entity (grounded and
    # offset metrics), but an answered string outside the schema (the reference metric).
    nlp = scripted_nlp(oracle([misc], {"else": ["classification algorithms"]}))
    [result] = evaluate(nlp, [misc]).datasets
    assert (result.grounded.f1, result.offset.f1) == (100.0, 100.0)
    assert (result.grounded_counts.n_gold, result.grounded_counts.n_pred) == (3, 3)
    counts = result.reference_counts
    assert (counts.tp, counts.n_pred, counts.n_gold) == (3, 4, 3)
    assert result.unaligned_reasons == {"label not in the schema": 1}


@needs_data
def test_duplicates_collapse_in_the_string_metric(ai: EvalSet):
    repeated = one(ai, REPEATED)
    assert len(repeated.records[0].entities) == 6
    nlp = scripted_nlp(oracle([repeated], {"product": ["Planner", "planner"]}))
    [result] = evaluate(nlp, [repeated]).datasets
    # ("planner", "product") counts once on each side; offsets keep both occurrences.
    for counts in (result.grounded_counts, result.reference_counts):
        assert (counts.tp, counts.n_pred, counts.n_gold) == (5, 5, 5)
    assert result.offset.f1 == 100.0


@needs_data
def test_an_unannotated_occurrence_costs_offset_precision_only(ai: EvalSet):
    india = one(ai, OTHER_OCCURRENCE)
    nlp = scripted_nlp(oracle([india]))
    [result] = evaluate(nlp, [india]).datasets
    assert result.grounded.f1 == result.reference.f1 == 100.0
    # "India" is grounded inside "Digital India" too: 3 of 4 predicted spans are gold.
    assert (result.offset.precision, result.offset.recall) == (75.0, 100.0)
    assert result.offset_per_type["country"].precision == pytest.approx(200 / 3)


@needs_data
def test_unaligned_rate_and_whitespace_reasoning_tokens(ai: EvalSet):
    sentences = dataclasses.replace(ai, records=ai.records[:2])
    pairs = [{(r.text[s:e], label) for s, e, label in r.entities} for r in sentences.records]
    named = sum(map(len, pairs)) + 2  # the model's answer lists each pair once, plus Atlantis
    nlp = scripted_nlp(oracle([sentences], {"country": ["Atlantis"]}, "one two three"))
    result = evaluate(nlp, [sentences])
    [d] = result.datasets
    assert (d.mentions, d.unaligned) == (named, 2)
    assert d.unaligned_rate == pytest.approx(100 * 2 / named)
    assert d.unaligned_reasons == {"not found in the text": 2}
    assert d.grounded.precision == 100.0  # unaligned mentions never become entities
    # ... but they are answered strings: the paper's metric counts them as false positives.
    assert d.reference.precision == pytest.approx(100 * (named - 2) / named)
    assert d.reference.recall == d.grounded.recall == 100.0
    assert (d.reasoning_tokens_mean, d.reasoning_tokens_p95) == (3.0, 3.0)
    assert result.reasoning_token_unit.startswith("whitespace")


class CutOff:
    """A backend whose every completion hits the token budget mid-answer."""

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        return [Completion("<think>" + prompt_text(p), finish_reason="length") for p in prompts]


@needs_data
def test_parse_failures_and_truncated_completions_are_counted(ai: EvalSet):
    sentences = dataclasses.replace(ai, records=ai.records[:3])
    nlp = scripted_nlp(oracle([]))
    nlp.get_pipe("reasoning_ner").backend = CutOff()
    [d] = evaluate(nlp, [sentences]).datasets
    assert (d.unparsed, d.truncated, d.mentions, d.not_json) == (3, 3, 0, 3)
    assert d.unaligned_rate is None and d.grounded.f1 == d.reference.f1 == 0.0


def test_repaired_answers_count_for_the_grounded_metric_only(ai: EvalSet):
    sentences = dataclasses.replace(ai, records=ai.records[:3])
    answer = oracle([sentences])

    def single_quoted(text: str) -> str:
        return answer(text).replace('"', "'")  # our parser repairs it, json.loads refuses it

    [d] = evaluate(scripted_nlp(single_quoted), [sentences]).datasets
    assert d.grounded.f1 == 100.0 and d.unparsed == 0
    assert d.reference.f1 == 0.0 and d.not_json == 3


@needs_data
def test_any_pipeline_setting_ents_is_evaluated(ai: EvalSet):
    misc = one(ai, WITH_MISC)
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "algorithm", "pattern": "SVM"},
            {"label": "misc", "pattern": "classification algorithms"},
        ]
    )
    result = evaluate(nlp, [misc])
    [d] = result.datasets
    assert (d.grounded_counts.tp, d.grounded_counts.n_pred, d.grounded_counts.n_gold) == (1, 1, 3)
    assert d.reference is None and result.metrics() == ["grounded", "offset"]
    assert d.offset.recall == pytest.approx(100 / 3)
    assert d.mentions is None and d.reasoning_tokens_mean is None


@needs_data
def test_overlap_guard_refuses_then_reports_when_allowed(ai: EvalSet, tmp_path: Path):
    sentences = dataclasses.replace(ai, records=ai.records[:3])
    seen = sentences.records[1].text
    # Re-cased and re-spaced, inside a training passage: still the same sentence.
    passage = f"An unrelated first sentence here. {seen.upper().replace(' ,', ',')}"
    log = tmp_path / "samples.jsonl"
    entries = [{"text": passage, "kept": True}, {"text": sentences.records[0].text, "kept": False}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    training = read_training_texts(tmp_path)  # the CG folder: kept samples only
    assert training == [passage]
    nlp = scripted_nlp(oracle([sentences]))
    with pytest.raises(OverlapError, match=r"crossner_ai: 1 .*allow_overlap"):
        evaluate(nlp, [sentences], training=training)
    result = evaluate(nlp, [sentences], training=training, allow_overlap=True)
    assert result.datasets[0].overlapping == 1
    assert "WARNING crossner_ai: 1 evaluation sentences are in the training data" in (
        result.to_markdown()
    )


def test_file_without_labels_json_and_outputs(tmp_path: Path):
    bio = tmp_path / "mine" / "test.bio"
    bio.parent.mkdir()
    bio.write_text("Alice\tB-PER\nvisited\tO\nParis\tB-MISC\n\nBob\tB-PER\nslept\tO\n")
    eval_set = eval_set_from_file(bio)
    assert (eval_set.name, eval_set.labels) == ("mine", ["PER"])  # MISC dropped
    assert [r.entities for r in eval_set.records] == [[(0, 5, "PER")], [(0, 3, "PER")]]
    result = evaluate(scripted_nlp(oracle([eval_set])), [eval_set], name="scripted")
    paths = result.save(tmp_path / "out")
    assert [p.name for p in paths] == ["results.json", "results.md", "f1.png"]
    saved = json.loads(paths[0].read_text())
    assert saved["pipeline"] == "scripted"
    assert (
        saved["datasets"][0]["reference"]["f1"] == saved["datasets"][0]["grounded"]["f1"] == 100.0
    )
    assert saved["average"]["all"]["offset"]["f1"] == 100.0
    assert "| mine | 2 | 100.0 |" in paths[1].read_text()
    assert paths[2].read_bytes().startswith(b"\x89PNG")


@needs_data
def test_naming_with_placeholder_names_is_refused():
    with pytest.raises(ValueError, match="same name"):
        load_eval_set(DATA, "conll2003", naming="instructuie_name", limit=1)


@needs_data
def test_tiny_model_end_to_end(tiny_model_dir: Path):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person"],
            # Unconstrained: grammar-constrained answers cost a minute on two CPU cores.
            "backend": {"model": str(tiny_model_dir), "structured_output": False},
            "generation": {"max_new_tokens": 8},
        },
    )
    sets = [load_eval_set(DATA, "crossner_politics", limit=3)]
    result = evaluate(nlp, sets)
    [d] = result.datasets
    assert d.sentences == 3 and d.seconds_per_sentence > 0
    # Eight tokens of a random model: never JSON, always cut; gold still counted.
    assert (d.unparsed, d.truncated, d.mentions, d.not_json) == (3, 3, 0, 3)
    for counts in (d.grounded_counts, d.reference_counts):
        assert (counts.tp, counts.n_pred, counts.n_gold) == (0, 0, 16)
    assert (d.grounded.f1, d.reference.f1, d.offset.f1) == (0.0, 0.0, 0.0)
    assert result.reasoning_token_unit == f"tokens of the backend's tokenizer ({tiny_model_dir})"
    assert d.reasoning_tokens_mean is not None


@needs_data
def test_stage_reads_its_profile_section(tmp_path: Path):
    from training.config import load_profile
    from training.evaluate import EvaluateConfig, evaluate_profile

    pipeline = save_scripted_pipeline(tmp_path / "pipeline")
    log = tmp_path / "samples.jsonl"
    log.write_text(json.dumps({"text": "A training sentence with nothing in it."}) + "\n")
    overrides = {
        "evaluate.pipeline": str(pipeline),
        "evaluate.data": str(DATA),
        "evaluate.datasets": ["crossner_science", "mit_movie"],
        "evaluate.limit": 2,
        "evaluate.output": str(tmp_path / "out"),
        "evaluate.training_data": [str(log)],
    }
    result, paths = evaluate_profile(EvaluateConfig.from_profile(load_profile("cpu", overrides)))
    assert [d.dataset for d in result.datasets] == ["crossner_science", "mit_movie"]
    assert all(p.is_file() for p in paths)
    assert "mit_movie: no dev split" in paths[1].read_text()
