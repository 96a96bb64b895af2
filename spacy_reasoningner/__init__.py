"""spacy-reasoningner: reason-then-extract zero-shot NER as a spaCy component."""

from . import registry
from .backends.openai import OpenAIBackend, make_openai_backend
from .backends.transformers import TransformersBackend, make_transformers_backend
from .backends.vllm import VLLMBackend, make_vllm_backend
from .component import ReasoningNER, make_reasoning_ner
from .protocol import Schema, parse_completion, render_messages

__version__ = "0.1.0"

__all__ = [
    "OpenAIBackend",
    "ReasoningNER",
    "Schema",
    "TransformersBackend",
    "VLLMBackend",
    "make_openai_backend",
    "make_reasoning_ner",
    "make_transformers_backend",
    "make_vllm_backend",
    "parse_completion",
    "registry",
    "render_messages",
]
