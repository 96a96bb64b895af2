"""spacy-reasoningner: reason-then-extract zero-shot NER as a spaCy component."""

from . import registry
from .backends.openai import OpenAIBackend
from .backends.transformers import TransformersBackend
from .backends.vllm import VLLMBackend
from .component import ReasoningNER, make_reasoning_ner
from .protocol import Schema, parse_completion, render_messages
from .settings import ComponentSettings
from .task import NERTask

__version__ = "0.1.0"

__all__ = [
    "ComponentSettings",
    "NERTask",
    "OpenAIBackend",
    "ReasoningNER",
    "Schema",
    "TransformersBackend",
    "VLLMBackend",
    "make_reasoning_ner",
    "parse_completion",
    "registry",
    "render_messages",
]
