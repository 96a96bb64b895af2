"""Profiles and the typed configuration of each stage.

A profile is one spaCy-style ``.cfg`` file per hardware profile (``configs/cpu.cfg``, ...).
Values can be overridden on the command line the way ``spacy train`` does it
(``--paths.data ../shared/data``), and ``${...}`` references are interpolated. Inference
engines are blocks of the ``reasoning_ner_backends`` registry, so the teacher and the judge of
the data stage can be any backend the component can use.

Every stage reads its own section into one dataclass (``StageConfig``), in the manner of TRL's
``*_config.py``: the defaults are written once, in the dataclass; checks live in
``__post_init__``; a key the dataclass does not have is an error that names the closest key
it does have, so that a misspelt setting never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from confection import Config

from spacy_reasoningner.backends.base import Backend, GenerationSettings

# Re-exported: every stage's command reads its overrides through this module.
from spacy_reasoningner.overrides import parse_overrides as parse_overrides
from spacy_reasoningner.registry import registry

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
T = TypeVar("T")


def load_profile(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """The interpolated profile; ``path`` may also be a profile name such as ``cpu``.

    A profile may start from another: ``[profile] base = "cpu"`` reads ``cpu`` first and
    lays this file's values over it (a section holding ``@...`` of another block replaces
    the block). References are interpolated after the merge, so ``${paths.output}`` in the
    base profile means this profile's output.
    """
    merged = _read_profile(_profile_path(path), seen=())
    return Config().from_str(merged.to_str(), overrides=overrides or {}, interpolate=True)


def _profile_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".cfg" and not path.exists():  # a profile name such as gpu-1.7b
        path = CONFIG_DIR / f"{path}.cfg"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.cfg"))
        raise FileNotFoundError(f"no profile {str(path)!r}: give a .cfg file or one of {known}")
    return path


def _read_profile(path: Path, seen: tuple[Path, ...]) -> Config:
    """The profile at ``path`` merged over its base profiles, not interpolated."""
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in (*seen, path.resolve()))
        raise ConfigError(f"profiles extend each other in a circle: {chain}")
    config = Config().from_disk(path, interpolate=False)
    header = config.pop("profile", {})
    if set(header) - {"base"}:
        raise ConfigError(f"[profile] of {path} takes only `base`, got {sorted(header)}")
    base = header.get("base")
    if base is None:
        return config
    # The base is a profile beside this one, or one of configs/.
    candidates = [path.parent / f"{base}.cfg", CONFIG_DIR / f"{base}.cfg"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.cfg"))
        raise FileNotFoundError(
            f"{path} extends profile {base!r}, which is neither beside it nor one of {known}"
        )
    return _read_profile(found, (*seen, path.resolve())).merge(config)


def section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A dotted section (``cg.sources``) as a plain dict; a clear error when it is missing."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"the profile has no [{name}] section; see configs/cpu.cfg for one")
        node = node[part]
    return dict(node)


def build_backend(block: Mapping[str, Any]) -> Backend:
    """A backend from a ``[...]`` block holding ``@reasoning_ner_backends = "..."``."""
    if "@reasoning_ner_backends" not in block:
        raise ValueError(
            'a backend block needs @reasoning_ner_backends = "reasoning_ner.Transformers.v1" '
            f"(or VLLM.v1, OpenAI.v1), got keys {sorted(block)}"
        )
    return registry.resolve({"backend": dict(block)})["backend"]


def build_settings(block: Mapping[str, Any] | None) -> GenerationSettings:
    return GenerationSettings.from_config(dict(block or {}))


def fingerprint(value: Any) -> str:
    """Short stable hash of a JSON-able value (a config section), to detect changed reruns."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- typed sections


class ConfigError(ValueError):
    """A profile section that does not fit its stage's configuration."""


def unknown_keys_message(keys: Sequence[str], known: Sequence[str], where: str, what: str) -> str:
    """``[where] has settings <what> does not take: 'x' (did you mean 'y'?); ...``."""
    problems = []
    for key in sorted(keys):
        close = difflib.get_close_matches(key, known, n=1)
        problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"[{where}] has settings {what} does not take: {'; '.join(problems)}"


def from_block(cls: type[T], block: Mapping[str, Any], where: str) -> T:
    """An instance of the dataclass ``cls`` from the section ``block`` found at ``where``.

    Values are converted to the field types (``Path``, enums, nested dataclasses, lists and
    mappings of them); ``dict[str, SomeDataclass]`` fields take one sub-section per entry, and
    the entry's key fills that dataclass's ``name`` field when it has one.
    """
    if not isinstance(block, Mapping):
        raise ConfigError(f"[{where}] must be a section, got {type(block).__name__} {block!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [key for key in block if key not in fields]
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, list(fields), where, cls.__name__))
    missing = [
        name
        for name, f in fields.items()
        if name not in block
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"[{where}] needs {', '.join(repr(m) for m in missing)}")
    hints = typing.get_type_hints(cls)
    values = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in block.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"[{where}] {error}") from error


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}"
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a section or mapping, got {value!r}")
        item = args[1] if args else Any
        converted = {}
        for key, entry in value.items():
            if dataclasses.is_dataclass(item) and isinstance(entry, Mapping):
                names = {f.name for f in dataclasses.fields(item)}
                entry = {"name": key, **entry} if "name" in names else entry
            converted[key] = _convert(item, entry, f"{where}.{key}")
        return converted
    if dataclasses.is_dataclass(kind):
        return from_block(kind, value, where)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(
                f"{where} = {value!r} is not one of {[m.value for m in kind]}"
            ) from None
    if kind in _SCALARS:
        fits, name, make = _SCALARS[kind]
        if not fits(value):
            raise ConfigError(f"{where} must be {name}, got {value!r}")
        return make(value)
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


# Scalar field types: (does a value fit, the type in words, conversion). bool is an int in
# Python, so the number types refuse it explicitly.
_SCALARS: dict[type, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    bool: (lambda v: isinstance(v, bool), "true or false", bool),
    int: (lambda v: not isinstance(v, bool) and _whole(v), "a whole number", int),
    float: (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)), "a number", float),
    str: (lambda v: isinstance(v, str), "a string", str),
    Path: (lambda v: isinstance(v, (str, Path)), "a path", Path),
}


class StageConfig:
    """Base of the stage configurations (dataclasses): ``from_profile`` reads the stage's
    section (``SECTION``) of a profile, refusing keys the stage does not know."""

    SECTION: ClassVar[str]

    @classmethod
    def from_profile(cls: type[T], profile: Mapping[str, Any]) -> T:
        name = cls.SECTION  # type: ignore[attr-defined]
        return from_block(cls, section(profile, name), name)


def require(condition: bool, message: str) -> None:
    """A ``__post_init__`` check: raise ``ConfigError(message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)
