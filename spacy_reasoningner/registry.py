"""Registries for swappable parts, so config files can choose them by name.

``@reasoning_ner_backends = "reasoning_ner.Transformers.v1"`` selects a backend; third-party
packages can add backends through the ``spacy_reasoning_ner_backends`` entry point group.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import catalogue
import spacy

if "reasoning_ner_backends" not in spacy.util.registry.get_registry_names():
    spacy.util.registry.create("reasoning_ner_backends", entry_points=True)


class registry(spacy.util.registry):
    reasoning_ner_backends: catalogue.Registry


backends: catalogue.Registry = registry.reasoning_ner_backends

BackendClass = TypeVar("BackendClass", bound=type)


def register_backend(name: str, options: type) -> Callable[[BackendClass], BackendClass]:
    """Class decorator: register, under the versioned ``name``, a function whose parameters
    are the fields of the frozen dataclass ``options`` and which returns
    ``Backend(options(**config))``.

    A version's config is its options class, not the backend's ``__init__``: the class may
    change while ``options`` stays, and a new version registers a new options class beside
    it, so configs of the old version keep working. The options are written once: the
    registered function's signature (which spaCy validates configs against, and fills
    defaults from) and docstring come from them."""

    def decorate(backend: BackendClass) -> BackendClass:
        if any(f.default_factory is not dataclasses.MISSING for f in dataclasses.fields(options)):
            raise TypeError(f"{options.__name__}: options take plain defaults (None for a dict)")
        hints = typing.get_type_hints(options)
        parameters = [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty
                if field.default is dataclasses.MISSING
                else field.default,
                annotation=hints[field.name],
            )
            # The model first, as a config reads best; then the options in their order.
            for field in sorted(dataclasses.fields(options), key=lambda f: f.name != "model")
            if field.init
        ]

        def make(**config: Any) -> Any:
            return backend(options(**config))

        words = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", backend.__name__).lower()
        make.__name__ = make.__qualname__ = f"make_{words}"
        make.__module__ = backend.__module__
        make.__doc__ = options.__doc__
        make.__signature__ = inspect.Signature(parameters, return_annotation=backend)  # type: ignore[attr-defined]
        make.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": backend}
        backends.register(name, func=make)
        return backend

    return decorate
