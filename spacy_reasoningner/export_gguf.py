"""A model folder (safetensors, as a saved pipeline or the bundled models keep it) written as
one GGUF file that llama.cpp's server and Ollama load.

Written with the ``gguf`` package (llama.cpp's own writer, already a dependency: transformers
reads GGUF through it), for the architectures this project ships: Llama (the SmolLM2 models)
and Qwen2/Qwen3. The tensors are renamed by ``gguf``'s name map; Llama's query and key
projections are permuted back to llama.cpp's rotary layout (transformers undoes that
permutation when it reads a GGUF, as llama.cpp's converter does it when it writes one). Norms
stay float32; the other matrices are written in the chosen type (``f32`` reproduces the
folder's float32 weights; ``f16`` and ``q8_0`` halve and quarter the file, close but not
equal under greedy decoding, see bench/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

GGUF_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's name of the pre-tokenizer (how text is split before BPE), by the tokenizer.json's
# "pre_tokenizer" block: llama.cpp cannot tell it from the vocabulary. The bundled models'
# tokenizers (transformers' reading of the SmolLM2 GGUF) split as GPT-2 does; SmolLM2's own
# tokenizer also splits digits apart.
_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt-2": _BYTE_LEVEL,
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": _QWEN2_SPLIT},
                "behavior": "Isolated",
                "invert": False,
            },
            {**_BYTE_LEVEL, "use_regex": False},
        ],
    },
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    },
}
# The backends that run a model folder in process (the others ask a server or an API).
_LOCAL_BACKENDS = ("reasoning_ner.Transformers.v1", "reasoning_ner.VLLM.v1")
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


def export_gguf(model_dir: Path, output: Path, gguf_type: str = "f16") -> Path:
    """Write the model of ``model_dir`` to ``output`` as GGUF with matrices in ``gguf_type``;
    a ValueError names what cannot be exported and why."""
    import gguf

    check_gguf_type(gguf_type)
    config = _read_json(model_dir / "config.json")
    architecture = _architecture(config, model_dir)
    tokenizer = _read_json(model_dir / "tokenizer.json")
    pre_tokenizer = _pre_tokenizer_name(tokenizer, model_dir)
    writer = gguf.GGUFWriter(str(output), architecture)
    writer.add_name(config.get("_model_name_or_path") or model_dir.name)
    _add_hyperparameters(writer, config, architecture)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_types.get(gguf_type, gguf.LlamaFileType.MOSTLY_Q8_0))
    _add_vocabulary(writer, tokenizer, config, model_dir, pre_tokenizer)
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for name, weights in _tensors(model_dir, config, architecture):
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{model_dir}: tensor {name!r} has no GGUF name for {architecture}")
        data, raw_type = _encode(weights, gguf_type, gguf)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def check_gguf_type(gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"GGUF type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")


def model_folder(source: str) -> Path:
    """The safetensors folder behind ``source``: a saved pipeline (the weights its
    reasoning_ner component keeps, else the model its backend names), a model folder, or a
    model reference (``bundled:...``)."""
    from .models import resolve_model

    path = Path(source).expanduser()
    if (path / "config.cfg").is_file():
        return _pipeline_model_folder(path)
    source_of = resolve_model(source)
    if source_of.gguf_file:
        raise ValueError(f"{source} is a GGUF file already: serve it as it is")
    return Path(source_of.path)


def _pipeline_model_folder(pipeline: Path) -> Path:
    from spacy.util import load_config

    from .models import resolve_model

    components = load_config(pipeline / "config.cfg", interpolate=False).get("components", {})
    names = [n for n, c in components.items() if c.get("factory") == "reasoning_ner"]
    if not names:
        raise ValueError(f"pipeline {pipeline} has no reasoning_ner component")
    saved = pipeline / names[0] / "model"
    if (saved / "config.json").is_file():
        return saved
    backend = components[names[0]].get("backend", {})
    reference = backend.get("model")
    if backend.get("@reasoning_ner_backends") not in _LOCAL_BACKENDS or not isinstance(
        reference, str
    ):
        raise ValueError(
            f"pipeline {pipeline}: its reasoning_ner backend holds no model weights (a server "
            "or an API): export the model that server runs instead"
        )
    return Path(resolve_model(reference).path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path.parent} has no {path.name}: it is not a transformers model folder")
    return json.loads(path.read_text(encoding="utf-8"))


def _architecture(config: dict[str, Any], model_dir: Path) -> str:
    found = config.get("architectures") or []
    for name in found:
        if name in _ARCHITECTURES:
            return _ARCHITECTURES[name]
    raise ValueError(
        f"{model_dir}: architecture {found} cannot be exported to GGUF here (supported: "
        f"{', '.join(_ARCHITECTURES)}); llama.cpp's convert_hf_to_gguf.py knows more"
    )


def _pre_tokenizer_name(tokenizer: dict[str, Any], model_dir: Path) -> str:
    block = tokenizer.get("pre_tokenizer")
    for name, known in PRE_TOKENIZERS.items():
        if block == known:
            return name
    raise ValueError(
        f"{model_dir}: its tokenizer's pre-tokenizer ({json.dumps(block)[:120]}) is not one "
        f"this exporter knows ({', '.join(PRE_TOKENIZERS)}): llama.cpp would split text "
        "differently from the model; use llama.cpp's convert_hf_to_gguf.py"
    )


def _add_hyperparameters(writer: Any, config: dict[str, Any], architecture: str) -> None:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    if architecture == "llama":
        writer.add_rope_dimension_count(head_dim)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _add_vocabulary(
    writer: Any, tokenizer: dict[str, Any], config: dict[str, Any], model_dir: Path, pre: str
) -> None:
    """The byte-level BPE vocabulary (tokens, their types, merges), special tokens and the
    chat template, as llama.cpp's ``gpt2`` tokenizer model reads them."""
    import gguf

    model = tokenizer["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{model_dir}: a {model.get('type')} tokenizer; only BPE is exported")
    size = config["vocab_size"]
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, index in model["vocab"].items():
        if index < size:
            tokens[index], types[index] = token, gguf.TokenType.NORMAL
    for added in tokenizer.get("added_tokens", []):
        if added["id"] < size:
            tokens[added["id"]] = added["content"]
            special = added.get("special", False)
            types[added["id"]] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_token_merges(merges)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=size)
    special.add_to_gguf(writer)
    # The chat template writes the whole prompt, special tokens included, and the backends
    # here tokenize it as it is: no BOS in front (llama.cpp's default for BPE would add one).
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    template = model_dir / "chat_template.jinja"
    if special.chat_template is None and template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def _tensors(
    model_dir: Path, config: dict[str, Any], architecture: str
) -> Iterator[tuple[str, np.ndarray]]:
    """The folder's tensors as float32 arrays, Llama's query and key permuted for llama.cpp;
    a tied output head is left out (llama.cpp ties it when ``output.weight`` is absent)."""
    from safetensors import safe_open

    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_dir} has no safetensors weights")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue
                weights = handle.get_tensor(name).float().numpy()
                if architecture == "llama" and name.endswith("self_attn.q_proj.weight"):
                    weights = _rotary_permute(weights, heads)
                elif architecture == "llama" and name.endswith("self_attn.k_proj.weight"):
                    weights = _rotary_permute(weights, kv_heads)
                yield name, weights


def _rotary_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from transformers' half-split rotary layout to llama.cpp's
    interleaved one (the inverse of what transformers applies when reading a GGUF)."""
    rows = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, rows, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _encode(weights: np.ndarray, gguf_type: str, gguf: Any) -> tuple[np.ndarray, Any]:
    """The tensor's data and GGML type: 1-D tensors (norms, biases) stay float32."""
    if weights.ndim == 1 or gguf_type == "f32":
        return weights.astype(np.float32), gguf.GGMLQuantizationType.F32
    if gguf_type == "f16":
        return weights.astype(np.float16), gguf.GGMLQuantizationType.F16
    quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    return quantized, gguf.GGMLQuantizationType.Q8_0
