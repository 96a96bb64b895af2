"""Entity types as the model sees them: names, definitions, the misc-like rule."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Type names that the reference drops from the schema and from gold ("misc-like"), plus
# "miscellaneous", the same type under the natural naming of the labels.json files. The one
# list: training profiles and the benchmark code import it (see ``is_misc_like``).
MISC_LIKE_LABELS = frozenset({"na", "n a", "misc", "miscellaneous", "else", "other", "nan"})


def label_key(label: str) -> str:
    """The form under which a label is compared: case, spacing and underscores do not matter."""
    return " ".join(label.replace("_", " ").split()).lower()


def is_misc_like(label: str) -> bool:
    """True for the catch-all types the reference leaves out of schemas and gold
    (``MISC_LIKE_LABELS``, compared as ``label_key``); the one rule every stage imports."""
    return label_key(label) in MISC_LIKE_LABELS


@dataclass(frozen=True)
class Schema:
    """Entity types in the order given, with optional definitions.

    ``labels`` keep the user's spelling (they become ``Span.label_``); ``prompt_names`` is what
    the model sees: lowercased and sorted as in the reference when ``lowercase`` is set, and
    ``schema_json`` their rendering in the prompt.
    """

    labels: tuple[str, ...]
    definitions: Mapping[str, str] = field(default_factory=dict)
    lowercase: bool = True
    prompt_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    schema_json: str = field(init=False, repr=False, compare=False)
    _by_key: dict[str, str] = field(init=False, repr=False, compare=False)
    _canonical_memo: dict[str, str | None] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, labels: Any, *, lowercase: bool = True) -> Schema:
        """Validate ``labels`` (a list of names or a mapping name -> definition)."""
        hint = 'use e.g. labels = ["person", "location"] or {"person": "a human being"}'
        if isinstance(labels, Mapping):
            names, definitions = list(labels.keys()), dict(labels)
        elif isinstance(labels, Sequence) and not isinstance(labels, str):
            names, definitions = list(labels), {}
        else:
            raise ValueError(
                f"labels must be a list of names or a mapping name -> definition, "
                f"got {type(labels).__name__}: {hint}"
            )
        if not names:
            raise ValueError(f"labels is empty: give at least one entity type ({hint})")
        seen: dict[str, str] = {}
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"label {name!r} is not a non-empty string: {hint}")
            key = label_key(name)
            if key in seen:
                raise ValueError(
                    f"labels {seen[key]!r} and {name!r} are duplicates (labels are compared "
                    "ignoring case, spaces and underscores): keep one of them"
                )
            seen[key] = name
        for name, definition in definitions.items():
            if not isinstance(definition, str):
                raise ValueError(
                    f"the definition of label {name!r} must be a string, "
                    f"got {type(definition).__name__}: write it as text or use a list of labels"
                )
        clean = {k: " ".join(v.split()) for k, v in definitions.items() if v.strip()}
        return cls(labels=tuple(names), definitions=clean, lowercase=lowercase)

    def to_config(self) -> list[str] | dict[str, str]:
        """The ``labels`` config value this schema was built from (definitions included)."""
        if not self.definitions:
            return list(self.labels)
        return {label: self.definitions.get(label, "") for label in self.labels}

    def __post_init__(self) -> None:
        # Derived once from the immutable fields: rendering and parsing run per document.
        names = [self.prompt_name(label) for label in self.labels]
        derived = {
            "prompt_names": tuple(sorted(names) if self.lowercase else names),
            "_by_key": {label_key(label): label for label in self.labels},
            "_canonical_memo": {},
        }
        derived["schema_json"] = json.dumps(list(derived["prompt_names"]), ensure_ascii=False)
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def prompt_name(self, label: str) -> str:
        return label_key(label) if self.lowercase else label.strip()

    def canonical(self, model_label: str) -> str | None:
        """Map a label the model wrote back to the configured label, or None if not in schema."""
        # Memoized per spelling (bounded: model output is open-ended); answers repeat labels.
        memo = self._canonical_memo
        if model_label not in memo:
            if len(memo) >= 4096:
                return self._by_key.get(label_key(model_label))
            memo[model_label] = self._by_key.get(label_key(model_label))
        return memo[model_label]
