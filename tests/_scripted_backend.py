"""A backend that answers from a script: the test double for a model that knows the answer.

It is also a worked example of a user-registered backend (see docs/backends.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import spacy

from spacy_reasoningner.backends import Completion, GenerationSettings
from spacy_reasoningner.protocol import ChatMessages
from spacy_reasoningner.registry import backends

TEXT_MARKER = "\nText: "


def prompt_text(prompt: ChatMessages) -> str:
    """The text a prompt asks about (the protocol puts it last, after 'Text: ')."""
    return prompt[-1]["content"].rsplit(TEXT_MARKER, 1)[1]


class ScriptedBackend:
    """Answers each prompt with ``answer(text)``; records every batch it receives."""

    def __init__(self, answer: Callable[[str], str]):
        self.answer = answer
        self.calls: list[int] = []

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        self.calls.append(len(prompts))
        return [Completion(text=self.answer(prompt_text(p))) for p in prompts]


@backends.register("tests.Scripted.v1")
def make_scripted_backend(completion: str = '{"entities": {}}') -> ScriptedBackend:
    return ScriptedBackend(lambda text: completion)


def save_scripted_pipeline(folder: Path, labels: Sequence[str] = ("person",)) -> Path:
    """A saved pipeline whose reasoning_ner component answers with the scripted backend."""
    nlp = spacy.blank("en")
    backend = {"@reasoning_ner_backends": "tests.Scripted.v1"}
    nlp.add_pipe("reasoning_ner", config={"labels": list(labels), "backend": backend})
    nlp.to_disk(folder)
    return folder
