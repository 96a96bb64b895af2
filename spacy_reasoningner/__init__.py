"""spacy-reasoningner: reason-then-extract zero-shot NER as a spaCy component."""

from . import registry
from .backends.openai import OpenAIBackend, OpenAIOptions
from .backends.spacy_llm import SpacyLLMBackend
from .backends.transformers import TransformersBackend, TransformersOptions
from .backends.vllm import VLLMBackend, VLLMOptions
from .component import ReasoningNER, make_reasoning_ner
from .protocol import Schema, parse_completion, render_messages
from .settings import ComponentSettings
from .task import NERTask

__version__ = "0.1.0"

__all__ = [
    "ComponentSettings",
    "NERTask",
    "OpenAIBackend",
    "OpenAIOptions",
    "ReasoningNER",
    "Schema",
    "SpacyLLMBackend",
    "TransformersBackend",
    "TransformersOptions",
    "VLLMBackend",
    "VLLMOptions",
    "make_reasoning_ner",
    "parse_completion",
    "registry",
    "render_messages",
]
