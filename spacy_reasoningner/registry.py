"""Registries for swappable parts, so config files can choose them by name.

``@reasoning_ner_backends = "reasoning_ner.Transformers.v1"`` selects a backend; third-party
packages can add backends through the ``spacy_reasoning_ner_backends`` entry point group.
"""

import catalogue
import spacy

if "reasoning_ner_backends" not in spacy.util.registry.get_registry_names():
    spacy.util.registry.create("reasoning_ner_backends", entry_points=True)


class registry(spacy.util.registry):
    reasoning_ner_backends: catalogue.Registry


backends: catalogue.Registry = registry.reasoning_ner_backends
