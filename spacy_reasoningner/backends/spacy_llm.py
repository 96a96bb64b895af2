"""A bridge to spacy-llm's models: any ``@llm_models`` function (hosted APIs, Hugging Face
models, your own) as the engine of the ``reasoning_ner`` component, so an existing spacy-llm
model config serves here unchanged:

    [components.reasoning_ner.backend]
    @reasoning_ner_backends = "reasoning_ner.SpacyLLM.v1"
    name = "gpt-4o-mini"

    [components.reasoning_ner.backend.model]
    @llm_models = "spacy.GPT-4.v3"
    name = "gpt-4o-mini"

spacy-llm models take one prompt string each and answer with text. A single user turn (the
paper's prompt) is passed as its content; earlier turns (few-shot examples) are written out
before it as a transcript. Decoding (token budget, temperature) is set in the spacy-llm
model's own config: ``generation`` settings do not reach it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..protocol import ChatMessages
from ..registry import backends
from .base import Completion, GenerationSettings

logger = logging.getLogger(__name__)

SpacyLLMModel = Callable[[Iterable[Iterable[str]]], Iterable[Iterable[str]]]


@backends.register("reasoning_ner.SpacyLLM.v1")
def make_spacy_llm_backend(model: SpacyLLMModel, name: str | None = None) -> SpacyLLMBackend:
    """A spacy-llm model (``model``: the result of an ``@llm_models`` function).

    name: what names the model's answers for the response cache (e.g. the model's name);
        spacy-llm models do not say it themselves, so ``cache_path`` needs it.
    """
    if not callable(model):
        raise ValueError(
            "backend.model must be a spacy-llm model (the result of an @llm_models function), "
            f"got {type(model).__name__}"
        )
    return SpacyLLMBackend(model) if not name else NamedSpacyLLMBackend(model, name)


class SpacyLLMBackend:
    """Prompts to a spacy-llm model, one string each; its answers as completions."""

    def __init__(self, model: SpacyLLMModel):
        self.model = model
        self._told_about_settings = False

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        if settings != GenerationSettings() and not self._told_about_settings:
            self._told_about_settings = True
            logger.info(
                "generation settings are not passed to spacy-llm models: set decoding in the "
                "spacy-llm model's config (e.g. config_run or config)"
            )
        texts = [prompt_text(messages) for messages in prompts]
        # spacy-llm's call shape: prompts per document; here a document per prompt, the one
        # shape every spacy-llm model answers in the same shape.
        answers = [list(doc) for doc in self.model([[text] for text in texts])]
        if [len(a) for a in answers] != [1] * len(texts):
            raise RuntimeError(
                f"the spacy-llm model {type(self.model).__name__} did not answer each of the "
                f"{len(texts)} prompts once: {[len(a) for a in answers]} answers per prompt"
            )
        return [
            Completion(text=str(answer), prompt=text)
            for [answer], text in zip(answers, texts, strict=True)
        ]


class NamedSpacyLLMBackend(SpacyLLMBackend):
    """A spacy-llm model with a name, so that its answers can be cached."""

    def __init__(self, model: SpacyLLMModel, name: str):
        super().__init__(model)
        self.name = name

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "spacy-llm", "model": self.name, "class": type(self.model).__name__}


def prompt_text(messages: ChatMessages) -> str:
    """One prompt string: the user turn's content, after the earlier turns as a transcript."""
    *history, last = messages
    if not history:
        return last["content"]
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in history]
    return "\n\n".join([*lines, f"{last['role'].capitalize()}: {last['content']}", "Assistant:"])
