"""Training logs kept beside the model: a metrics JSONL and curves as a PNG.

TRL logs every step's metrics (loss, learning rate, for GRPO each reward component, the
completion lengths, KL and entropy) into ``TrainerState.log_history``, which the Trainer saves
in ``trainer_state.json``. ``MetricsLog`` mirrors that history into ``metrics.jsonl`` as it
grows (one JSON object per log call) and draws ``curves.png`` when training ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"

# One panel per quantity; the first key of each that was logged is drawn, with its companions.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "eval_loss")),
    ("token accuracy", ("mean_token_accuracy", "eval_mean_token_accuracy")),
    ("reward (weighted sum)", ("reward",)),
    ("reward components", ("rewards/*/mean",)),
    ("completion tokens", ("completions/mean_length", "completions/mean_terminated_length")),
    ("clipped completions", ("completions/clipped_ratio",)),
    ("KL to reference", ("kl",)),
    ("entropy", ("entropy",)),
    ("learning rate", ("learning_rate",)),
    ("gradient norm", ("grad_norm",)),
)


class MetricsLog(TrainerCallback):
    """Keeps ``<folder>/metrics.jsonl`` equal to the log history and plots it at the end."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # A resumed run restores the history of its checkpoint: restart the file from it, so
        # steps redone after the checkpoint are not logged twice.
        if state.is_world_process_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(entry) + "\n" for entry in state.log_history]
            (self.folder / METRICS_NAME).write_text("".join(lines), encoding="utf-8")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and state.log_history:
            with (self.folder / METRICS_NAME).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(state.log_history[-1]) + "\n")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            plot_curves(state.log_history, self.folder / CURVES_NAME)


def _series(history: Sequence[dict[str, Any]], pattern: str) -> dict[str, tuple[list, list]]:
    """``{key: (steps, values)}`` for the logged keys matching ``pattern`` (one ``*``)."""
    head, star, tail = pattern.partition("*")
    series: dict[str, tuple[list, list]] = {}
    for entry in history:
        for key, value in entry.items():
            matches = key == pattern or (
                star and key.startswith(head) and key.endswith(tail) and len(key) > len(pattern)
            )
            if matches and isinstance(value, (int, float)):
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry.get("step", len(steps)))
                values.append(value)
    return series


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Draw the panels that have data into ``path``; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    panels = []
    for title, patterns in PANELS:
        lines = {k: v for p in patterns for k, v in _series(history, p).items()}
        if lines:
            panels.append((title, lines))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for axis, (title, lines) in zip(axes.flat, panels, strict=False):
        for key, (steps, values) in lines.items():
            axis.plot(steps, values, marker="." if len(steps) < 50 else None, label=key)
        axis.set_title(title)
        axis.set_xlabel("step")
        if len(lines) > 1:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
