"""Benchmark tooling: corpus readers, evaluation sets, the paper's evaluation protocol and
its reports. Not needed by the component at run time: ``nlp.add_pipe("reasoning_ner")``
imports nothing from here.

* ``readers``: every corpus format of the training and benchmark data into ``NERRecord``;
* ``datasets``: benchmark datasets as evaluation sets (label naming, misc-like types, MIT dev);
* ``overlap``: normalized-sentence hashes that keep evaluation text out of training data;
* ``evaluation``: run a pipeline over evaluation sets and score it (string and offset F1).
"""

from .datasets import ZERO_SHOT_DATASETS, EvalSet, eval_set_from_file, load_eval_set
from .evaluation import DatasetResult, EvaluationResult, evaluate
from .overlap import OverlapError, find_overlap, read_training_texts
from .readers import NERRecord, read_records

__all__ = [
    "ZERO_SHOT_DATASETS",
    "DatasetResult",
    "EvalSet",
    "EvaluationResult",
    "NERRecord",
    "OverlapError",
    "eval_set_from_file",
    "evaluate",
    "find_overlap",
    "load_eval_set",
    "read_records",
    "read_training_texts",
]
