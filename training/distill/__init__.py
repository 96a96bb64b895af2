"""Distillation: a reasoning_ner teacher annotates a corpus, a fast spaCy ``ner`` learns it.

Four commands, each reading ``[distill]`` of a profile (``config``), one module each
(``data``, ``student`` for training and packaging, ``evaluate``; ``commands`` the CLI):

* ``distill-data``: the corpus (``[distill.sources]``, read and decontaminated like the CG
  stage's sources) is annotated by the teacher through ``spacy_reasoningner.annotate`` (any
  engine, response cache, resumable), or taken from gold (``teacher.kind = "gold"``: a perfect
  teacher, the student's upper bound). Teacher outputs are filtered (truncated or unparsed
  completions; optionally unaligned mentions; with several samples, documents whose samples
  disagree), labels are mapped, the rest is split into ``train.spacy`` and ``dev.spacy``.
  Every dropped document and entity is counted in ``report.json``, none is lost silently.
* ``distill-train``: a training config from ``spacy init config --pipeline ner`` (the CPU
  ``tok2vec`` architecture for ``student.kind = "cnn"``, spaCy's transformer template pointed
  at a local encoder for ``"transformer"``) with the profile's overrides, trained by the real
  ``spacy train`` CLI; the best model's ``meta.json`` gets the provenance (student, teacher,
  counts, scores), which ``spacy package`` carries into the wheel.
* ``distill-evaluate``: teacher and student on the same gold dev sentences: string F1 (the
  paper's reference metric for the teacher; for the student every entity is a string it
  answered, so its grounded and reference string F1 coincide), offset F1, the student's
  agreement F1 with the teacher, and docs/s of each.
* ``distill-package``: ``spacy package`` of the student.

The student's side (config, training, evaluation, packaging) runs in ``student.python``: a
transformer student needs spacy-transformers, whose transformers pin conflicts with the
project's, so it gets its own environment (``make student-venv``).

    python -m training distill-data cpu [--distill.sources.conll2003.limit 400]
"""

from .commands import data_command, evaluate_command, package_command, train_command
from .config import ROOT, DistillConfig, DistillEvalConfig, StudentConfig, TeacherConfig
from .data import DistillData, distill_data, teacher_spec
from .evaluate import distill_evaluate, evaluate_student, headline
from .student import check_student_python, distill_package, distill_train, encoder_folder

__all__ = [
    "ROOT",
    "DistillConfig",
    "DistillData",
    "DistillEvalConfig",
    "StudentConfig",
    "TeacherConfig",
    "check_student_python",
    "data_command",
    "distill_data",
    "distill_evaluate",
    "distill_package",
    "distill_train",
    "encoder_folder",
    "evaluate_command",
    "evaluate_student",
    "headline",
    "package_command",
    "teacher_spec",
    "train_command",
]
