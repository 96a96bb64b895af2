"""Inference backends behind one interface; see ``base.Backend``."""

from .base import Backend, BackendError, Completion, GenerationSettings, SerializableBackend

__all__ = ["Backend", "BackendError", "Completion", "GenerationSettings", "SerializableBackend"]
