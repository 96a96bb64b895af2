"""The benchmark data the tests read: ``$REASONINGNER_DATA``, else ``../shared/data`` beside
the repository. Only the tests that read it are marked ``needs_data``; pure-logic tests run
without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(
    os.environ.get("REASONINGNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"no benchmark data at {DATA} (set REASONINGNER_DATA)"
)
