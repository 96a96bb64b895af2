"""``export-gguf``: a model folder or saved pipeline written as GGUF that llama.cpp loads.

Fast: the tiny random Qwen3 exported and read back (metadata, tensors, vocabulary), its
logits in llama.cpp against transformers', and the refusals. Slow: the bundled NER model
exported from a saved pipeline by the command as a user types it, served by llama.cpp's
server, answering the demo sentences exactly as the in-process transformers backend does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import spacy
import torch

from spacy_reasoningner.export_gguf import export_gguf, model_folder

from ._servers import LlamaCppServer, served_pipeline

gguf = pytest.importorskip("gguf")

DEMO = [  # bench/default_model.py's examples and one with a date
    "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.",
    "Tim Cook met Sundar Pichai at Google headquarters in Mountain View.",
    "Apple Inc. was founded by Steve Jobs and Steve Wozniak in Cupertino, California.",
    "The 1998 World Cup final was played in Paris on 12 July.",
]
LABELS = ["person", "organization", "location"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "spacy_reasoningner", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def field(reader, key: str):
    return reader.fields[key].contents()


def test_the_tiny_model_reads_back_with_its_vocabulary_and_template(tiny_model_dir, tmp_path):
    written = export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", "f16")
    reader = gguf.GGUFReader(written)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert field(reader, "general.architecture") == "qwen3"
    assert field(reader, "qwen3.block_count") == config["num_hidden_layers"]
    assert field(reader, "qwen3.attention.key_length") == config["head_dim"]
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config["vocab_size"]
    assert tokens[1] == "<|im_start|>" and tokens[2] == "<|im_end|>"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"  # as transformers splits it here
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "blk.0.attn_q_norm.weight" in types
    assert "output.weight" not in types or not config.get("tie_word_embeddings")


def test_llama_cpp_computes_the_logits_transformers_does(tiny_model_dir, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: make test")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    written = export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", "f32")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompt = "<|im_start|>user\nAda Lovelace met Charles Babbage in 1833.<|im_end|>\n"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llama = llama_cpp.Llama(str(written), n_ctx=256, logits_all=True, verbose=False)
    assert llama.tokenize(prompt.encode(), add_bos=False, special=True) == ids
    llama.eval(ids)
    found = np.array(llama.scores[: len(ids)])
    assert np.abs(found - expected).max() < 1e-2 * np.abs(expected).max()
    assert (found.argmax(-1) == expected.argmax(-1)).all()


def test_what_cannot_be_exported_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="'q4' is not one of f32, f16, q8_0"):
        export_gguf(tiny_model_dir, tmp_path / "x.gguf", "q4")
    with pytest.raises(ValueError, match=r"has no config\.json: it is not a transformers model"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match=r"\['GPT2LMHeadModel'\] cannot be exported.*convert_hf"):
        export_gguf(other, tmp_path / "x.gguf")
    tokenizer = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (other / "config.json").write_text(json.dumps(config))
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match=r"pre-tokenizer .*Whitespace.* is not one this exporter"):
        export_gguf(other, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_pipeline_without_weights_is_refused_with_the_reason(tmp_path):
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1", "model": "served"}
    nlp.add_pipe("reasoning_ner", config={"labels": LABELS, "backend": backend})
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="holds no model weights"):
        model_folder(str(tmp_path / "pipeline"))
    done = cli("export-gguf", str(tmp_path / "pipeline"), str(tmp_path / "x.gguf"))
    assert done.returncode == 1 and "Error: pipeline" in done.stderr


@pytest.mark.slow
def test_the_exported_pipeline_answers_in_llama_cpp_as_in_process(tmp_path):
    pytest.importorskip("llama_cpp.server", reason="llama.cpp's server is not installed")
    nlp = spacy.blank("en")
    backend = {"model": "bundled:smollm2-135m-ner", "structured_output": False}
    nlp.add_pipe("reasoning_ner", config={"labels": LABELS, "backend": backend, "keep_raw": True})
    nlp.to_disk(tmp_path / "pipeline")
    done = cli(
        "export-gguf", str(tmp_path / "pipeline"), str(tmp_path / "ner.gguf"), "--type", "f32"
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'ner.gguf'} (" in done.stdout and "f32" in done.stdout
    expected = [nlp(text) for text in DEMO]  # one at a time: no padding in the batch

    server = LlamaCppServer(tmp_path / "ner.gguf", tmp_path / "server.log")
    server.start(timeout=120)
    try:
        # llama-cpp-python's server penalises repeats (1.1) unless told otherwise.
        served = served_pipeline(
            server.url,
            config={"labels": LABELS},
            structured_output=False,
            extra_body={"repeat_penalty": 1.0},
        )
        found = list(served.pipe(DEMO))
    finally:
        server.stop()
    for want, got in zip(expected, found, strict=True):
        assert got._.ner_raw[0]["completion"] == want._.ner_raw[0]["completion"]
        assert [(e.text, e.label_) for e in got.ents] == [(e.text, e.label_) for e in want.ents]
    assert sum(len(d.ents) for d in found) >= 8  # the model finds the demo's entities


@pytest.mark.slow
def test_the_qwen_0_5b_exports_with_the_qwen2_pre_tokenizer(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: make test")
    from transformers import AutoTokenizer

    folder = model_folder("bundled:qwen2.5-coder-0.5b-instruct")
    written = export_gguf(folder, tmp_path / "qwen.gguf", "q8_0")
    reader = gguf.GGUFReader(written)
    assert field(reader, "general.architecture") == "qwen2"
    assert field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied, as converted
    text = (
        "<|im_start|>user\nIn 1833, Ada's notes (über 20 pages)\n\n  ran to 65,000 words.<|im_end|>"
    )
    expected = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    vocab = llama_cpp.Llama(str(written), vocab_only=True, verbose=False)
    assert vocab.tokenize(text.encode(), add_bos=False, special=True) == expected
