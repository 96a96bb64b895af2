"""The CG stage on real sentences of ../shared/data: planning, generation modes, quality
control, decontamination, outputs, determinism and resuming after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from spacy_reasoningner.backends import BackendError, Completion, GenerationSettings
from spacy_reasoningner.benchmark.readers import NERRecord, read_ner_cot_jsonl
from spacy_reasoningner.protocol import Schema, parse_completion, render_answer
from spacy_reasoningner.registry import backends
from training.build_data import DataConfig, run
from training.config import ConfigError, build_backend, build_settings, load_profile
from training.quality import (
    AGREES,
    COVERED,
    IN_SCHEMA,
    IN_TEXT,
    PARSED,
    VERDICT_MAX_TOKENS,
    gold_check,
    judge_checks,
    parse_judgement,
    structural_checks,
)
from training.samples import gold_entities
from training.teacher import Draft, template_draft

from ._data import DATA, needs_data
from ._scripted_backend import ScriptedBackend

# Completions of the oracle teacher, by text, and the calls on which it fails; tests set them.
ORACLE: dict[str, str] = {}
FAIL_ON_CALL: list[int] = []


class OracleTeacher(ScriptedBackend):
    """Answers from ORACLE; raises BackendError on the calls listed in FAIL_ON_CALL."""

    def __init__(self) -> None:
        super().__init__(lambda text: ORACLE[text])

    def generate(self, prompts, settings):
        if len(self.calls) + 1 in FAIL_ON_CALL:
            self.calls.append(len(prompts))
            raise BackendError("teacher died")
        return super().generate(prompts, settings)


@backends.register("tests.OracleTeacher.v1")
def make_oracle_teacher() -> OracleTeacher:
    return OracleTeacher()


def config_for(tmp_path: Path, **cg: object) -> DataConfig:
    overrides = {
        "paths.data": str(DATA),
        "paths.output": str(tmp_path),
        "cg.sources.conll2003.limit": 6,
        "cg.sources.pile_ner.limit": 3,
        "cg.sources.conll2003.empty_share": None,  # every sampled sentence kept
        "cg.sources.pile_ner.empty_share": None,
        "cg.batch_size": 4,
        "cg.cache": None,
        **{f"cg.{k}": v for k, v in cg.items()},
    }
    config = DataConfig.from_profile(load_profile("cpu", overrides))
    # One evaluation dataset and no token counts keep these tests quick; the first test below
    # runs the profile's full set.
    config.decontamination.datasets = ["conll2003"]
    config.tokenizer = None
    return config


def oracle_completion(record: NERRecord, *, cover: bool = True) -> str:
    entities = gold_entities(record)
    named = ", ".join(m for ms in entities.values() for m in ms) if cover else "some names"
    schema = Schema.from_config(record.schema)
    return f"<think>\nThe entities are {named}.\n</think>\n{render_answer(entities, schema)}"


@needs_data
def test_template_run_writes_dataset_ner_cot_and_report(tmp_path: Path) -> None:
    overrides = {
        "paths.data": str(DATA),
        "paths.output": str(tmp_path),
        "cg.sources.conll2003.limit": 6,
        "cg.sources.pile_ner.limit": 3,
        # Every sampled sentence kept: no share of empty answers to bound.
        "cg.sources.conll2003.empty_share": None,
        "cg.sources.pile_ner.empty_share": None,
    }
    config = DataConfig.from_profile(load_profile("cpu", overrides))
    report = run(config)
    assert report["samples"] == 9 and report["kept"] == 9
    assert report["decontamination_removed"]["conll2003"]["conll2003/dev"] > 0
    dataset = load_from_disk(str(config.output / "dataset"))
    assert len(dataset) == 9
    row = next(r for r in dataset if r["dataset"] == "conll2003")
    assert "miscellaneous" not in row["schema"]  # misc dropped
    assert row["generator"] == "template"
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].endswith(row["text"])
    parsed = parse_completion(row["completion"][0]["content"], Schema.from_config(row["schema"]))
    assert parsed.valid and parsed.reasoning == row["reasoning"]
    assert sorted(parsed.mentions()) == sorted((e["text"], e["label"]) for e in row["entities"])
    # Pile-NER passages get at least two sampled negative types besides the ones asked.
    samples = [json.loads(line) for line in (config.output / "samples.jsonl").open()]
    assert all(len(e["schema"]) >= 3 for e in samples if e["dataset"] == "pile_ner")
    # CoNLL's negative types come from Pile-NER's list, never an evaluation type or a type
    # a sentence may hold unannotated.
    profile = load_profile("cpu", overrides)
    pool = set(json.loads(Path(profile["types"]["negative_pool"]).read_text()))
    conll = [entry for entry in samples if entry["dataset"] == "conll2003"]
    assert conll and any(len(entry["schema"]) > 3 for entry in conll)  # some got negatives
    for entry in conll:
        negatives = set(entry["schema"]) - {"location", "organization", "person"}
        assert negatives <= pool - set(profile["types"]["not_negative"])
    cot = read_ner_cot_jsonl(config.output / "ner_cot.jsonl")
    assert [r.text for r in cot] == [r["text"] for r in dataset]
    assert "# Reasoning data (template): 9 of 9 kept" in (config.output / "report.md").read_text()
    assert 3 < report["reasoning_tokens"]["mean"] < 64


@needs_data
def test_runs_are_deterministic_under_the_seed(tmp_path: Path) -> None:
    first, second = config_for(tmp_path / "a"), config_for(tmp_path / "b")
    run(first), run(second)
    read = lambda c: (c.output / "samples.jsonl").read_text()  # noqa: E731
    assert read(first) == read(second)
    other = config_for(tmp_path / "c", seed=1)
    run(other)
    assert read(other) != read(first)


@needs_data
def test_interrupted_run_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    reference = config_for(tmp_path / "whole", mode="reannotate")
    records = reference.plan().records
    ORACLE.update({r.text: oracle_completion(r) for r in records})
    reference.teacher = {"@reasoning_ner_backends": "tests.OracleTeacher.v1"}
    run(reference)

    crashing = config_for(tmp_path / "crash", mode="reannotate")
    crashing.teacher = reference.teacher
    FAIL_ON_CALL[:] = [2]
    try:
        with pytest.raises(BackendError):
            run(crashing)
    finally:
        FAIL_ON_CALL.clear()
    log = crashing.output / "samples.jsonl"
    assert len(log.read_text().splitlines()) == 4  # the first batch
    with log.open("a") as handle:
        handle.write('{"guid": "cut by the crash')  # a half-written line
    run(crashing)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({e["guid"] for e in entries}) == len(entries) == len(records)
    a = load_from_disk(str(reference.output / "dataset")).to_list()
    b = load_from_disk(str(crashing.output / "dataset")).to_list()
    assert a == b and len(a) == len(records)


@needs_data
def test_rerun_with_another_configuration_is_refused(tmp_path: Path) -> None:
    run(config_for(tmp_path))
    with pytest.raises(ValueError, match="different \\[cg\\] configuration"):
        run(config_for(tmp_path, seed=5))


@needs_data
def test_quality_control_drops_bad_drafts_with_reasons(tmp_path: Path) -> None:
    config = config_for(tmp_path, mode="reannotate")
    records = config.plan().records
    uncovered = next(r for r in records[2:] if gold_entities(r))  # a gold entity to miss
    bad = {
        records[0].text: "I cannot find anything.",
        records[1].text: '<think>Hmm.</think>{"entities": {"weapon": ["gun"]}}',
        uncovered.text: oracle_completion(uncovered, cover=False),
    }
    ORACLE.update({r.text: oracle_completion(r) for r in records} | bad)
    config.teacher = {"@reasoning_ner_backends": "tests.OracleTeacher.v1"}
    report = run(config)
    entries = {e["text"]: e for e in map(json.loads, (config.output / "samples.jsonl").open())}
    assert entries[records[0].text]["drop_reason"] == PARSED
    assert entries[records[1].text]["drop_reason"] == IN_SCHEMA
    assert entries[uncovered.text]["drop_reason"] == COVERED
    assert report["kept"] == sum(e["kept"] for e in entries.values())
    assert report["dropped_by_reason"][PARSED] == 1


@needs_data
def test_forbidden_domain_is_refused(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    config.sources["conll2003"].name = "crossner_ai"
    with pytest.raises(ValueError, match="evaluation domains"):
        config.plan()


def _record() -> NERRecord:
    text = "Ada Lovelace met Charles Babbage in London ."
    return NERRecord(
        text,
        [(0, 12, "person"), (17, 32, "person"), (36, 42, "location")],
        "x:1",
        schema=["location", "person"],
    )


def test_checks_on_hand_made_drafts() -> None:
    record = _record()
    good = template_draft(record)
    assert all(c.passed for c in structural_checks(record, good, require_coverage=True))
    assert gold_check(record, good, 1.0).passed
    invented = Draft("Paris is a location.", {"location": ["Paris"]}, "x")
    failed = {
        c.name for c in structural_checks(record, invented, require_coverage=True) if not c.passed
    }
    assert failed == {IN_TEXT}
    check = gold_check(record, invented, 0.5)
    assert check.name == AGREES and not check.passed and "F1 0.000" in check.detail
    empty = NERRecord("Nothing here .", [], "x:2", schema=["person"])
    assert gold_check(empty, Draft("none", {}, "x"), 0.9).passed


def test_judge_replies_are_read_leniently() -> None:
    judged = parse_judgement('Sure! {"coherence": 9, "accuracy": 10, "justification": "ok"}')
    assert judged is not None and judged.score == 9 and judged.justification == "ok"
    assert parse_judgement("coherence: 7\naccuracy = 8").score == 7
    assert parse_judgement('{"coherence": 11, "accuracy": 3}') is None
    assert parse_judgement("I think it is good.") is None


@pytest.mark.slow
@needs_data
def test_bundled_model_as_teacher_and_judge(tmp_path: Path) -> None:
    """SmolLM2 for real: drafts and judgements are produced and every decision recorded."""
    config = config_for(
        tmp_path,
        mode="rationalize",
        **{
            "sources.conll2003.limit": 3,
            "sources.pile_ner.limit": 1,
            "teacher_generation.max_new_tokens": 96,
            "judge_generation.max_new_tokens": 48,
            "quality.judge": True,
            "quality.require_coverage": False,
            "cache": str(tmp_path / "cache"),
        },
    )
    report = run(config)
    entries = [json.loads(line) for line in (config.output / "samples.jsonl").open()]
    assert len(entries) == report["samples"] == 4
    assert all(e["generator"].startswith("rationalize:") for e in entries)
    assert all(e["kept"] or e["drop_reason"] for e in entries)
    judged = [c for e in entries for c in e["checks"] if c["name"] == "judge score"]
    assert all(c["detail"] for c in judged)
    assert (
        sum(report["per_source"][s].get("kept", 0) for s in report["per_source"]) == report["kept"]
    )


def test_a_hostile_judge_reply_never_raises_and_costs_linear_time():
    from ._timing import grows_linearly

    assert parse_judgement('{"x": ' + "[" * 5000) is None  # the decoder recursed per bracket
    assert parse_judgement('{"coherence": 1' + "0" * 5000 + ', "accuracy": 9}') is None
    assert grows_linearly(lambda size: parse_judgement("{" * size), 8_000, 128_000)


# A judge that thinks too long: with thinking on it spends the whole token budget reasoning
# (about one token a word), and mentions scores on the way, as a thinking Qwen3 does.
VERDICT = '{"coherence": 9, "accuracy": 10, "justification": "Every entity is discussed."}'
JUDGE_RECORD = NERRecord(
    "Ada Lovelace met Charles Babbage .", [(0, 12, "person")], "t:1", schema=["person"]
)
JUDGE_DRAFT = Draft("Ada Lovelace is a person.", {"person": ["Ada Lovelace"]}, "teacher")


def long_thought(tokens: int) -> str:
    return " ".join(["Hmm, coherence: 3, accuracy: 2? Let me check each entity again."] * tokens)[
        : tokens * 5
    ]


def judge_reply(body: dict, number: int) -> tuple[int, dict, dict]:
    """vLLM with Qwen3's reasoning parser: the thought in reasoning_content; the verdict in
    content only when the chat template's thinking is off."""
    from .test_openai_backend import chat_response

    if (body.get("chat_template_kwargs") or {}).get("enable_thinking") is False:
        return 200, chat_response(VERDICT), {}
    thought = long_thought(body["max_tokens"])
    return 200, chat_response("", reasoning=thought, finish="length"), {}


class LongThinkingJudge:
    """The same judge in process, as a local backend returns it: the open think block inline."""

    def __init__(self) -> None:
        self.settings: list[GenerationSettings] = []

    def generate(self, prompts, settings: GenerationSettings) -> list[Completion]:
        self.settings.append(settings)
        if settings.chat_template_kwargs.get("enable_thinking") is False:
            return [Completion(VERDICT) for _ in prompts]
        thought = f"<think>\n{long_thought(settings.max_new_tokens)}"
        return [Completion(thought, finish_reason="length") for _ in prompts]


def test_gpu_profiles_judge_answers_with_thinking_off() -> None:
    """The GPU profiles' judge (Qwen3-32B behind vllm serve with the qwen3 reasoning parser),
    played by a loopback server: its verdict is read, asked for with thinking off."""
    from .test_openai_backend import ScriptedServer

    server = ScriptedServer(judge_reply)
    try:
        for profile in ("gpu-1.7b", "gpu-8b"):
            config = DataConfig.from_profile(
                load_profile(profile, {"cg.judge.base_url": server.url, "cg.judge.backoff": 0.01})
            )
            assert config.quality.judge and not config.quality.judge_thinking
            [(check, judgement)] = judge_checks(
                [JUDGE_RECORD],
                [JUDGE_DRAFT],
                build_backend(config.judge),
                build_settings(config.judge_generation),
                config.quality.judge_threshold,
                thinking=config.quality.judge_thinking,
            )
            assert check.passed and judgement["coherence"] == 9, check.detail
            body = server.bodies[-1]
            assert body["chat_template_kwargs"] == {"enable_thinking": False}
            assert body["max_tokens"] == 2048
        assert server.calls == 2  # one request per verdict
    finally:
        server.close()


def test_a_judge_that_thinks_too_long_is_asked_again_for_its_verdict() -> None:
    """Thinking on (the default): the reply the budget cut before a verdict is asked once
    more, thinking off and short; the scores in the thought are no verdict."""
    judge = LongThinkingJudge()
    settings = GenerationSettings(max_new_tokens=2048)
    [(check, judgement)] = judge_checks([JUDGE_RECORD], [JUDGE_DRAFT], judge, settings, 9.0)
    assert check.passed and judgement["accuracy"] == 10
    assert "asked again without thinking" in check.detail
    first, second = judge.settings
    assert first == settings  # thinking as configured first
    assert second.chat_template_kwargs == {"enable_thinking": False}
    assert second.max_new_tokens == VERDICT_MAX_TOKENS
    # With thinking off from the start, one call; a reply still cut names the fix.
    judge = LongThinkingJudge()
    [(check, _)] = judge_checks([JUDGE_RECORD], [JUDGE_DRAFT], judge, settings, 9.0, thinking=False)
    assert check.passed and len(judge.settings) == 1
    cut = Completion(f"<think>{long_thought(50)}", finish_reason="length")
    stuck = ScriptedBackend(lambda text: "")
    stuck.generate = lambda prompts, settings: [cut for _ in prompts]
    [(check, _)] = judge_checks([JUDGE_RECORD], [JUDGE_DRAFT], stuck, settings, 9.0)
    assert not check.passed
    assert "cut by the token budget before a verdict" in check.detail
    assert "raise [cg.judge_generation] max_new_tokens" in check.detail


def test_judge_thinking_and_its_chat_template_switch_must_agree() -> None:
    overrides = {"cg.judge_generation.chat_template_kwargs": {"enable_thinking": True}}
    with pytest.raises(ConfigError, match=r"contradicts \[cg.quality\] judge_thinking"):
        DataConfig.from_profile(load_profile("gpu-8b", overrides))


def test_schema_sampling_varies_sizes_and_never_asks_present_or_excluded_types() -> None:
    import random

    from training.schemas import SchemaSampling, with_schema

    record = NERRecord(
        "Ada Lovelace met Babbage in London.",
        [(0, 12, "person"), (17, 24, "person"), (28, 34, "location")],
        "test",
    )
    pool = ("city", "disease", "gene", "person", "software", "sport", "vehicle")
    sampling = SchemaSampling.from_counts(
        [0, 3], pool=pool, exclude=["City", "sport"], subsets=True
    )
    rng = random.Random(0)
    corpus = ["location", "organization", "person"]
    schemas = [with_schema(record, corpus, sampling=sampling, rng=rng).schema for _ in range(200)]
    sizes = {len(s) for s in schemas}
    assert min(sizes) == 1 and max(sizes) == 6  # one asked type alone .. three plus three
    for schema in schemas:
        negatives = set(schema) - set(corpus)
        assert negatives <= {"disease", "gene", "software", "vehicle"}  # not excluded/present
        assert schema == sorted(schema) and len(set(schema)) == len(schema)
    # Gold follows the subset asked.
    only_location = next(s for s in schemas if set(s) & set(corpus) == {"location"})
    rng = random.Random(0)
    rebuilt = (with_schema(record, corpus, sampling=sampling, rng=rng) for _ in schemas)
    built = next(b for b in rebuilt if b.schema == only_location)  # the same draws again
    assert [t for *_, t in built.entities] == ["location"]
    with pytest.raises(ValueError, match="fewest"):
        SchemaSampling.from_counts([3, 1])
    with pytest.raises(ValueError, match="rng"):
        with_schema(record, corpus, sampling=sampling)


def test_plain_schema_share_asks_the_corpus_schema_alone_that_often() -> None:
    import random

    from training.schemas import SchemaSampling, with_schema

    record = NERRecord("Ada Lovelace met Babbage.", [(0, 12, "person")], "test")
    corpus = ["location", "organization", "person"]
    pool = ("disease", "gene", "software", "vehicle")
    sampling = SchemaSampling.from_counts([1, 3], pool=pool, plain_share=0.5)
    rng = random.Random(0)
    schemas = [with_schema(record, corpus, sampling=sampling, rng=rng).schema for _ in range(400)]
    plain = sum(schema == corpus for schema in schemas)
    assert 160 <= plain <= 240  # about half; every other schema has 1 to 3 absent types
    assert all(3 < len(schema) <= 6 for schema in schemas if schema != corpus)
    with pytest.raises(ValueError, match="plain_schema_share"):
        SchemaSampling.from_counts(2, plain_share=1.5)


def test_template_reasoning_names_each_answered_mention_and_stops() -> None:
    record = NERRecord(
        "Ada Lovelace met an engineer in London.",
        [(0, 12, "person"), (32, 38, "location")],
        "test",
        schema=["organization", "location", "person", "event"],
    )
    draft = template_draft(record)
    assert draft.reasoning == '"Ada Lovelace" is a person.\n"London" is a location.'
    record = NERRecord("Ada met IBM.", [(8, 11, "organization")], "t", schema=["organization"])
    assert template_draft(record).reasoning == '"IBM" is an organization.'
    record = NERRecord("Nothing here.", [], "test", schema=["person"])
    assert template_draft(record).reasoning == "The text names no entity of the schema's types."


def test_empty_share_bounds_the_samples_that_find_nothing() -> None:
    import random

    from training.sources import _bound_empty_share

    def record(i: int, entities: bool) -> tuple[NERRecord, NERRecord]:
        built = NERRecord(f"text {i}", [(0, 4, "person")] if entities else [], "t", schema=["x"])
        return built, built

    built = [record(i, entities=i % 2 == 0) for i in range(40)]  # 20 with, 20 without
    kept = _bound_empty_share(built, 0.2, random.Random(0))
    empty = [r for r, final in kept if not final.entities]
    assert len(kept) - len(empty) == 20 and len(empty) == 5  # 5 of 25 = 20%
    assert [r.text for r, _ in kept] == sorted((r.text for r, _ in kept), key=lambda t: int(t[5:]))
    assert _bound_empty_share(built, 0.6, random.Random(0)) == built  # already below
