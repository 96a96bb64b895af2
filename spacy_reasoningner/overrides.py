"""Config overrides from the command line, the way ``spacy train`` reads them
(``--components.reasoning_ner.max_chars 500``), for the package's CLI and the training stages.
Our own parser: spaCy's lives in its private ``spacy.cli._util``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import srsly


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``--section.key value`` (or ``--section.key=value``; a bare flag means true) pairs from
    the command line, values read as JSON where they parse and as strings otherwise."""
    overrides: dict[str, Any] = {}
    pending = list(args)
    while pending:
        option = pending.pop(0)
        if not option.startswith("--"):
            raise ValueError(
                f"unexpected argument {option!r}: overrides look like --section.key value"
            )
        key, has_value, value = option[2:].partition("=")
        if "." not in key:
            raise ValueError(
                f"{option!r} names no setting: overrides look like --section.key value "
                "(a whole section cannot be replaced)"
            )
        if not has_value:
            value = pending.pop(0) if pending and not pending[0].startswith("--") else "true"
        try:
            overrides[key] = srsly.json_loads(value)
        except ValueError:
            overrides[key] = value
    return overrides
