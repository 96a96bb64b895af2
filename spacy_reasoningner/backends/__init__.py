"""Inference backends behind one interface; see ``base.Backend``."""

from .base import Backend, Completion, GenerationSettings, SerializableBackend

__all__ = ["Backend", "Completion", "GenerationSettings", "SerializableBackend"]
