"""A full fine-tune shipped as its difference from the base model, in 4 bits.

A LoRA adapter cannot carry what full fine-tuning learned: the update of a SmolLM2-135M
fine-tune is of high rank (a rank-64 SVD leaves about 40% of it; bench/README.md,
"Capacity"), and full weights are as large as the model. The update itself is small against
the weights it changes, so it survives coarse rounding: each matrix is stored as symmetric
4-bit integers in groups of ``GROUP`` values along its rows, with one float16 scale per
group; vectors (norm weights) are stored as they are. A 135M model's delta is about a quarter
of its float16 size.

The file is ordinary safetensors: ``<name>.q4`` (uint8, two values a byte) and
``<name>.scale`` (float16) per matrix, ``<name>.exact`` per vector; its metadata records
each matrix's shape. Loading adds the dequantized delta to the base weights in float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DELTA_WEIGHTS = "weight_delta.safetensors"
GROUP = 64
LEVELS = 7  # symmetric 4-bit: -7 .. 7, stored offset by 8 in a nibble


def quantize_delta(tuned: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The packed tensors of ``tuned - base`` for every weight that changed."""
    import torch

    packed: dict[str, Any] = {}
    for name, weight in tuned.items():
        if name not in base:
            raise ValueError(f"the tuned weight {name!r} is not in the base model")
        if weight.shape != base[name].shape:
            raise ValueError(
                f"{name}: tuned shape {tuple(weight.shape)} != base {tuple(base[name].shape)}"
            )
        delta = weight.float() - base[name].float()
        if not torch.any(delta):
            continue
        if delta.dim() < 2:
            packed[f"{name}.exact"] = delta.contiguous()
            continue
        rows = delta.reshape(delta.shape[0], -1)
        width = rows.shape[1]
        padded = torch.nn.functional.pad(rows, (0, -width % GROUP)).reshape(-1, GROUP)
        # Rounded to float16 first, so that the levels are computed with the stored scale.
        scale = (padded.abs().amax(dim=1, keepdim=True) / LEVELS).to(torch.float16)
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
        levels = torch.clamp(torch.round(padded / divisor), -LEVELS, LEVELS).to(torch.uint8) + 8
        packed[f"{name}.q4"] = (levels[:, 0::2] | (levels[:, 1::2] << 4)).contiguous()
        packed[f"{name}.scale"] = scale.contiguous()
    return packed


def dequantize_delta(packed: Mapping[str, Any], shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    """``{name: float32 delta}`` from the tensors ``quantize_delta`` wrote."""
    import torch

    deltas: dict[str, Any] = {}
    for key, value in packed.items():
        name, kind = key.rsplit(".", 1)
        if kind == "exact":
            deltas[name] = value.float()
        elif kind == "q4":
            levels = torch.stack([value & 0x0F, value >> 4], dim=2).reshape(value.shape[0], -1)
            groups = (levels.float() - 8) * packed[f"{name}.scale"].float()
            shape = shapes[name]
            # Each row was padded to whole groups: drop the padding.
            rows = groups.reshape(shape[0], -1)[:, : math.prod(shape[1:])]
            deltas[name] = rows.reshape(shape)
    return deltas


def save_delta(tuned: Mapping[str, Any], base: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write the 4-bit delta of ``tuned`` over ``base`` to ``path``; returns its figures."""
    from safetensors.torch import save_file

    packed = quantize_delta(tuned, base)
    shapes = {
        key.rsplit(".", 1)[0]: list(tuned[key.rsplit(".", 1)[0]].shape)
        for key in packed
        if key.endswith((".q4", ".exact"))
    }
    save_file(packed, path, metadata={"format": "pt", "shapes": json.dumps(shapes, sort_keys=True)})
    restored = dequantize_delta(packed, shapes)
    exact = {n: tuned[n].float() - base[n].float() for n in shapes}
    error = sum(float((restored[n] - exact[n]).norm() ** 2) for n in shapes)
    size = sum(float(exact[n].norm() ** 2) for n in shapes)
    return {
        "tensors": len(shapes),
        "bytes": path.stat().st_size,
        "relative_error": (error / size) ** 0.5 if size else 0.0,
    }


def load_delta(path: Path) -> dict[str, Any]:
    """``{weight name: float32 delta}`` of a file ``save_delta`` wrote."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "shapes" not in metadata:
        raise ValueError(f"{path} is not a weight delta (no 'shapes' in its metadata)")
    return dequantize_delta(load_file(path), json.loads(metadata["shapes"]))
