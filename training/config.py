"""Profiles: one spaCy-style ``.cfg`` file per hardware profile (``configs/cpu.cfg``, ...).

Every stage reads its own section. Values can be overridden on the command line the way
``spacy train`` does it (``--paths.data ../shared/data``), and ``${...}`` references are
interpolated. Inference engines are blocks of the ``reasoning_ner_backends`` registry, so the
teacher and the judge of the data stage can be any backend the component can use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from confection import Config

from spacy_reasoningner.backends.base import Backend, GenerationSettings
from spacy_reasoningner.registry import registry

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_profile(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """The interpolated profile; ``path`` may also be a profile name such as ``cpu``."""
    path = Path(path)
    if path.suffix != ".cfg" and not path.exists():  # a profile name such as gpu-1.7b
        path = CONFIG_DIR / f"{path}.cfg"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.cfg"))
        raise FileNotFoundError(f"no profile {str(path)!r}: give a .cfg file or one of {known}")
    return Config().from_disk(path, overrides=overrides or {}, interpolate=True)


def section(config: Config, name: str) -> dict[str, Any]:
    """A dotted section (``cg.sources``) as a plain dict; a clear error when it is missing."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"the profile has no [{name}] section; see configs/cpu.cfg for one")
        node = node[part]
    return dict(node)


def build_backend(block: dict[str, Any]) -> Backend:
    """A backend from a ``[...]`` block holding ``@reasoning_ner_backends = "..."``."""
    if "@reasoning_ner_backends" not in block:
        raise ValueError(
            'a backend block needs @reasoning_ner_backends = "reasoning_ner.Transformers.v1" '
            f"(or VLLM.v1, OpenAI.v1), got keys {sorted(block)}"
        )
    return registry.resolve({"backend": block})["backend"]


def build_settings(block: dict[str, Any] | None) -> GenerationSettings:
    return GenerationSettings.from_config(dict(block or {}))


def fingerprint(value: Any) -> str:
    """Short stable hash of a JSON-able value (a config section), to detect changed reruns."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
