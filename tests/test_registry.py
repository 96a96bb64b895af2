"""The built-in backends are registered as versioned functions whose parameters are their
options dataclass (``register_backend``): spaCy validates and fills a backend block from the
options, and the function builds the backend from exactly those options."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import catalogue
import pytest
import spacy
from confection import ConfigValidationError

from spacy_reasoningner.backends.openai import OpenAIBackend, OpenAIOptions
from spacy_reasoningner.backends.transformers import TransformersBackend, TransformersOptions
from spacy_reasoningner.backends.vllm import VLLMBackend, VLLMOptions
from spacy_reasoningner.registry import backends, register_backend, registry

VERSIONS = [
    ("reasoning_ner.Transformers.v1", TransformersOptions, TransformersBackend),
    ("reasoning_ner.VLLM.v1", VLLMOptions, VLLMBackend),
    ("reasoning_ner.OpenAI.v1", OpenAIOptions, OpenAIBackend),
]


@pytest.mark.parametrize(("name", "options", "backend"), VERSIONS)
def test_a_version_takes_its_options_fields_and_nothing_else(name, options, backend):
    make = backends.get(name)
    assert make.__name__.startswith("make_") and make.__doc__ == options.__doc__
    signature = inspect.signature(make)
    assert signature.return_annotation is backend
    parameters = signature.parameters
    assert set(parameters) == {f.name for f in dataclasses.fields(options)}
    assert next(iter(parameters)) == "model"  # a filled config starts with the model
    for field in dataclasses.fields(options):
        expected = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert parameters[field.name].default == expected, field.name


def test_a_backend_block_is_validated_and_built_from_the_options():
    block = {"@reasoning_ner_backends": "reasoning_ner.Transformers.v1", "model": "m"}
    built = registry.resolve({"b": {**block, "batch_size": 2}})["b"]
    assert isinstance(built, TransformersBackend)
    assert built.options == TransformersOptions(model="m", batch_size=2)
    with pytest.raises(ConfigValidationError, match="batch_sise"):
        registry.resolve({"b": {**block, "batch_sise": 2}})
    with pytest.raises(ConfigValidationError, match="model"):  # required for a server
        registry.resolve({"b": {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1"}})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):  # the options' checks
        registry.resolve({"b": {**block, "batch_size": 0}})


def test_the_component_config_is_filled_from_the_options():
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "reasoning_ner.OpenAI.v1", "model": "m"}
    nlp.add_pipe("reasoning_ner", config={"labels": ["person"], "backend": backend})
    filled = dict(nlp.config["components"]["reasoning_ner"]["backend"])
    defaults = OpenAIOptions(model="m")
    assert list(filled)[:2] == ["@reasoning_ner_backends", "model"]
    assert filled["timeout"] == defaults.timeout and filled["max_retries"] == defaults.max_retries
    assert nlp.get_pipe("reasoning_ner").backend.options == defaults


def test_a_version_stays_what_its_options_say_when_the_class_changes():
    """The registered function passes the options object, whatever the class's __init__
    takes besides it: a v1 config does not follow a change of the class."""

    @dataclass(frozen=True, kw_only=True)
    class EchoOptions:
        """Echo."""

        model: str = "echo"
        rounds: int = 1

    class Echo:
        def __init__(self, options: EchoOptions, extra: str = "new in the class") -> None:
            self.options, self.extra = options, extra

    register_backend("test.Echo.v1", EchoOptions)(Echo)
    try:
        make = backends.get("test.Echo.v1")
        assert list(inspect.signature(make).parameters) == ["model", "rounds"]
        echo = registry.resolve({"b": {"@reasoning_ner_backends": "test.Echo.v1", "rounds": 3}})[
            "b"
        ]
        assert echo.options == EchoOptions(rounds=3) and echo.extra == "new in the class"
        with pytest.raises(ConfigValidationError, match="extra"):
            registry.resolve({"b": {"@reasoning_ner_backends": "test.Echo.v1", "extra": "x"}})
    finally:
        catalogue.REGISTRY.pop((*backends.namespace, "test.Echo.v1"))


def test_options_with_default_factories_are_refused():
    @dataclass(frozen=True)
    class Mutable:
        items: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="plain defaults"):
        register_backend("test.Mutable.v1", Mutable)(object)
