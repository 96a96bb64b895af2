"""The settings of the ``reasoning_ner`` component, written once.

``ComponentSettings`` holds each setting's type, default and documentation. From it come the
factory's default config and signature (which spaCy validates configs against), the factory's
docstring and the README's configuration table (a test compares them), so a setting is added
or changed in one place.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_type_hints

from spacy.tokens import Span

from .alignment import ALIGNMENT_MODES
from .backends.base import Backend, GenerationSettings

EntsFilter = Callable[[Iterable[Span], Iterable[Span]], list[Span]]

# Names of the Doc extensions, by what they hold.
EXTENSIONS = ("reasoning", "unaligned", "truncated", "raw", "usage", "issues")


def setting(doc: str, default: Any = MISSING, *, config: Any = MISSING) -> Any:
    """A setting with its documentation; ``config`` is its default in the config when that
    differs from the Python default (registered functions, mutable values)."""
    metadata = {"doc": doc, "config": default if config is MISSING else config}
    if default is MISSING:
        return field(metadata=metadata)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class ComponentSettings:
    """Settings of the ``reasoning_ner`` component (see ``setting`` docs per field)."""

    labels: Any = setting(
        "entity types: a list of names, or a mapping name -> definition. Empty, duplicate "
        "(ignoring case, spaces, underscores) and non-string labels are rejected. May be "
        "left unset and given to `initialize` (or read from its examples) instead.",
        None,
    )
    backend: Backend = setting(
        "the inference engine, a function of the `reasoning_ner_backends` registry (see "
        "*Backends*)",
        config={"@reasoning_ner_backends": "reasoning_ner.Transformers.v1"},
    )
    generation: dict[str, Any] = setting(
        "decoding (`GenerationSettings`): `max_new_tokens`, `temperature` (0 = greedy), "
        "`top_p`, `stop`, `seed`, `stop_reasoning_loops` (with constrained answers, the "
        "reasoning ends at its first line that repeats an earlier one), "
        "`chat_template_kwargs`",
        GenerationSettings().to_config(),
    )
    reasoning: bool = setting(
        "think first, then answer; `false` asks for the JSON only (backends with a chat "
        "template get `enable_thinking=False`, for Qwen3-style templates)",
        True,
    )
    reasoning_instruction: bool = setting(
        "end the prompt with a line asking to reason inside `<think>` first (with "
        "`reasoning = false`: to answer with the JSON only); the reference's prompt has no such "
        "line, so models trained as the paper's (the GPU profiles) want `false`",
        True,
    )
    grounded_answers: bool = setting(
        "when the backend constrains answers (`structured_output`, on by default for models "
        "below 4B parameters), allow only mentions that are spans of the text, so that the "
        "model cannot name what is not there",
        True,
    )
    lowercase_schema: bool = setting(
        "show type names lowercased and sorted, as the paper's models were trained; "
        "entities keep your spelling",
        True,
    )
    examples: list[dict[str, Any]] = setting(
        "few-shot examples, shown before each text as earlier user/assistant turns: "
        '`[{"text": ..., "entities": {label: [mention, ...]}, "reasoning": ...}]` '
        "(reasoning optional); none by default, as in the paper",
        [],
    )
    instruction: str | None = setting(
        "replaces the first sentence of the prompt (the paper's instruction); the notes, "
        "schema, output format and text stay the protocol's",
        None,
    )
    batch_size: int = setting(
        "at most this many Docs per backend call, also inside `nlp.pipe` (whose `batch_size`, "
        "1000 by default, only buffers Docs); fewer when `nlp.pipe` is given a smaller one",
        16,
    )
    progress: bool = setting("show a progress bar (stderr) while `nlp.pipe` runs", False)
    max_chars: int = setting("texts longer than this are split into sentence windows", 2000)
    window_overlap: int = setting("sentences shared by neighbouring windows", 1)
    fuzzy_match: bool = setting(
        "fall back to case- and whitespace-insensitive matching of mentions", True
    )
    alignment_mode: str = setting(
        "snapping of matches off token boundaries: `strict`, `contract`, `expand`", "expand"
    )
    ents_filter: EntsFilter = setting(
        "how new entities become `doc.ents`: a function `(entities, candidates) -> spans` of "
        "spaCy's `misc` registry, as span_ruler's. The default resolves overlapping "
        "candidates longest first, then leftmost, then in label order, and keeps the "
        "entities of earlier components, filling the gaps; "
        "`reasoning_ner.prefer_new_ents.v1` replaces the earlier ones they overlap",
        config={"@misc": "reasoning_ner.prefer_existing_ents.v1"},
    )
    scorer: Callable | None = setting(
        "scoring for `nlp.evaluate` and `spacy evaluate` (`ents_p`, `ents_r`, `ents_f`, "
        "`ents_per_type`), a function of spaCy's `scorers` registry",
        config={"@scorers": "spacy.ner_scorer.v1"},
    )
    spans_key: str | None = setting(
        "keep every grounded candidate, overlaps included, in `doc.spans[key]`", None
    )
    samples: int = setting(
        "completions sampled per window (in the same backend call; needs "
        "`generation.temperature` > 0 and `spans_key`): each candidate scores the share of "
        'samples that named it, kept in `doc.spans[spans_key].attrs["scores"]`',
        1,
    )
    threshold: float = setting(
        "candidates scoring below this stay out of `doc.ents` (they keep their score in "
        "`doc.spans[spans_key]`)",
        0.5,
    )
    keep_raw: bool = setting(
        "keep rendered prompts, completions (answer and reasoning) and finish reasons in "
        "`doc._.ner_raw`",
        False,
    )
    cache_path: str | None = setting(
        "cache completions in this SQLite file (or folder), for any backend with an identity",
        None,
    )
    reasoning_attr: str = setting("name of the Doc extension with the reasoning", "ner_reasoning")
    unaligned_attr: str = setting(
        "name of the Doc extension with the mentions not grounded", "ner_unaligned"
    )
    truncated_attr: str = setting(
        "name of the Doc extension flagging a completion cut by `max_new_tokens`", "ner_truncated"
    )
    raw_attr: str = setting(
        "name of the Doc extension with the messages, prompts and completions (`keep_raw`)",
        "ner_raw",
    )
    usage_attr: str = setting(
        "name of the Doc extension with tokens, seconds and backend, per window and in total",
        "ner_usage",
    )
    issues_attr: str = setting(
        "name of the Doc extension listing how the answers departed from the protocol "
        "(each issue once)",
        "ner_issues",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.backend, Backend):
            raise ValueError(
                f"backend {self.backend!r} has no generate(prompts, settings) method: register "
                "a function returning a backend in the reasoning_ner_backends registry"
            )
        if self.alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(
                f"alignment_mode {self.alignment_mode!r} is not one of {ALIGNMENT_MODES}"
            )
        if self.max_chars < 100:
            raise ValueError(f"max_chars must be at least 100 characters, got {self.max_chars}")
        if self.window_overlap < 0:
            raise ValueError(f"window_overlap must be >= 0 sentences, got {self.window_overlap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.samples > 1 and not self.generation.get("temperature"):
            raise ValueError(
                f"samples = {self.samples} needs sampling: set generation.temperature > 0 "
                "(e.g. 0.7); greedy decoding gives the same completion every time"
            )
        if self.samples > 1 and self.spans_key is None:
            raise ValueError(
                f"samples = {self.samples} scores candidates in doc.spans[spans_key]: set "
                'spans_key (e.g. "sc", as spancat)'
            )
        if self.instruction is not None and not str(self.instruction).strip():
            raise ValueError("instruction is empty: give the sentence to use, or leave it unset")
        for key in EXTENSIONS:
            name = getattr(self, f"{key}_attr")
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"{key}_attr {name!r} is not a valid Python identifier: name the Doc "
                    "extension like a variable"
                )

    @property
    def extension_names(self) -> dict[str, str]:
        """What each Doc extension holds -> its configured name."""
        return {key: getattr(self, f"{key}_attr") for key in EXTENSIONS}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The factory's ``default_config``: every setting with its config default."""
        return {f.name: f.metadata["config"] for f in fields(cls)}

    @classmethod
    def documentation(cls) -> dict[str, str]:
        return {f.name: f.metadata["doc"] for f in fields(cls)}

    @classmethod
    def signature_parameters(cls) -> list[inspect.Parameter]:
        """Keyword parameters with the settings' types, for the factory's signature."""
        hints = get_type_hints(cls)
        return [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name])
            for f in fields(cls)
        ]

    @classmethod
    def markdown_table(cls) -> str:
        """The README's configuration table: setting, config default, meaning."""
        rows = ["| setting | default | meaning |", "|---|---|---|"]
        rows += [
            f"| `{f.name}` | {_markdown_default(f.metadata['config'])} | {f.metadata['doc']} |"
            for f in fields(cls)
        ]
        return "\n".join(rows)

    @classmethod
    def docstring(cls) -> str:
        lines = [f"{f.name}: {f.metadata['doc']}" for f in fields(cls)]
        return "\n".join(lines)


def _markdown_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith("@"):
        return f"`{next(iter(value.values()))}`"  # a registered function
    if isinstance(value, dict):
        return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in value.items())
    return f"`{json.dumps(value).strip(chr(34))}`"


def forwards_settings(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``factory(nlp, name, **settings)`` the settings as its signature and docstring,
    so spaCy validates and fills its config as for a function that spells them out."""
    signature = inspect.signature(factory)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    settings = ComponentSettings.signature_parameters()
    factory.__signature__ = signature.replace(parameters=[*own, *settings])
    annotations = {k: v for k, v in factory.__annotations__.items() if k in signature.parameters}
    factory.__annotations__ = {
        **{p.name: annotations[p.name] for p in own if p.name in annotations},
        **{p.name: p.annotation for p in settings},
        "return": factory.__annotations__.get("return"),
    }
    factory.__doc__ = f"{(factory.__doc__ or '').strip()}\n\n{ComponentSettings.docstring()}\n"
    return factory
