"""The 4-bit weight delta that ships a full fine-tune (spacy_reasoningner/weight_delta.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacy_reasoningner.weight_delta import GROUP, LEVELS, load_delta, save_delta


def test_a_delta_round_trips_within_half_a_step_of_its_group(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = {
        "matrix": torch.randn(3, GROUP + 36),  # rows padded to whole groups
        "cube": torch.randn(2, 4, 20),
        "norm": torch.ones(7),
        "frozen": torch.randn(5, 5),
    }
    update = {name: 0.01 * torch.randn_like(weight) for name, weight in base.items()}
    update["frozen"].zero_()
    tuned = {name: base[name] + update[name] for name in base}

    figures = save_delta(tuned, base, tmp_path / "delta.safetensors")
    restored = load_delta(tmp_path / "delta.safetensors")

    assert set(restored) == {"matrix", "cube", "norm"}  # unchanged weights are not stored
    assert figures["tensors"] == 3 and 0 < figures["relative_error"] < 0.2
    torch.testing.assert_close(restored["norm"], update["norm"], rtol=0, atol=1e-7)
    for name in ("matrix", "cube"):
        assert restored[name].shape == base[name].shape
        rows = update[name].reshape(update[name].shape[0], -1)
        padded = torch.nn.functional.pad(rows, (0, -rows.shape[1] % GROUP)).reshape(-1, GROUP)
        half_step = (padded.abs().amax(dim=1) / LEVELS / 2).max()
        assert (restored[name] - update[name]).abs().max() <= half_step * 1.01


def test_a_delta_refuses_weights_the_base_lacks_or_shapes_it_does_not_have(
    tmp_path: Path,
) -> None:
    base = {"w": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="'extra' is not in the base model"):
        save_delta({"w": torch.ones(2, 2), "extra": torch.ones(1)}, base, tmp_path / "d")
    with pytest.raises(ValueError, match=r"tuned shape \(2, 3\) != base \(2, 2\)"):
        save_delta({"w": torch.ones(2, 3)}, base, tmp_path / "d")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a weight delta"):
        load_delta(tmp_path / "plain.safetensors")
