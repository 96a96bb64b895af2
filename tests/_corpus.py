"""The corpus-annotation tests' backend and corpus. The backend is imported by the workers of a
run through ``--code`` (or ``PipelineSpec.code``), so it works in Ray actors too.

It answers ``person`` for every capitalized word, so outputs carry real entities. It can
also log every text it generates for (to tell regenerated documents from cached ones), fail
on texts holding ``FAIL`` (a backend error after retries) until the file ``heal_marker``
exists (the cause fixed), and kill its own process with SIGKILL the first time it sees
``KILL`` (a worker dying mid-shard). Texts with ``CUT`` get a truncated completion and texts
with ``GARBLE`` an answer that is not JSON (bad teacher outputs for distillation).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spacy_reasoningner.backends import BackendError, Completion, GenerationSettings
from spacy_reasoningner.protocol import ChatMessages
from spacy_reasoningner.registry import backends

CAPITALIZED = re.compile(r"\b[A-Z][a-z]+\b")
TEXT_MARKER = "\nText: "


def names_answer(text: str) -> str:
    names = list(dict.fromkeys(CAPITALIZED.findall(text)))
    return (
        f"<think>Capitalized words are people.</think>{json.dumps({'entities': {'person': names}})}"
    )


def scripted_completion(text: str) -> Completion:
    """The names answer; cut short (truncated) for texts with CUT, prose (unparsed) for GARBLE."""
    if "GARBLE" in text:
        return Completion(text="<think>Hmm.</think>I think there are some names here.")
    if "CUT" in text:
        return Completion(text="<think>Capitalized words are", finish_reason="length")
    return Completion(text=names_answer(text))


class NamesBackend:
    def __init__(
        self, log: str | None = None, kill_marker: str | None = None, heal_marker: str | None = None
    ):
        self.log = Path(log) if log else None
        self.kill_marker = Path(kill_marker) if kill_marker else None
        self.heal_marker = Path(heal_marker) if heal_marker else None

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "tests.Names.v1"}

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        texts = [p[-1]["content"].rsplit(TEXT_MARKER, 1)[1] for p in prompts]
        if self.kill_marker and any("KILL" in t for t in texts) and not self.kill_marker.exists():
            self.kill_marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        healed = self.heal_marker is not None and self.heal_marker.exists()
        completed = {
            i: scripted_completion(t) for i, t in enumerate(texts) if healed or "FAIL" not in t
        }
        if self.log:
            with self.log.open("a", encoding="utf-8") as f:
                f.writelines(texts[i] + "\n" for i in completed)
        if len(completed) < len(texts):
            raise BackendError("the server answered 500 after 4 retries", completed=completed)
        return [completed[i] for i in range(len(texts))]


@backends.register("tests.Names.v1")
def make_names_backend(
    log: str | None = None, kill_marker: str | None = None, heal_marker: str | None = None
) -> NamesBackend:
    return NamesBackend(log, kill_marker, heal_marker)


class AnonymousNames:
    """The names answer from a backend written like the first example of docs/backends.md's
    "Your own backend": no ``identity``, so nothing can key a cache of its answers."""

    def generate(
        self, prompts: Sequence[ChatMessages], settings: GenerationSettings
    ) -> list[Completion]:
        return [names_completion(p) for p in prompts]


@backends.register("tests.AnonymousNames.v1")
def make_anonymous_names_backend() -> AnonymousNames:
    return AnonymousNames()


def names_completion(prompt: ChatMessages) -> Completion:
    return scripted_completion(prompt[-1]["content"].rsplit(TEXT_MARKER, 1)[1])


# --------------------------------------------------------------------------- corpus helpers

CODE = str(Path(__file__).resolve())  # what workers import (PipelineSpec.code, --code)


def names_spec(tmp: Path, **backend: Any):
    """A blank pipeline with reasoning_ner on the names backend; ``backend`` options as paths
    under ``tmp`` (log, kill_marker, heal_marker)."""
    from spacy_reasoningner.annotate import PipelineSpec

    block = {
        "@reasoning_ner_backends": "tests.Names.v1",
        **{k: str(tmp / v) for k, v in backend.items()},
    }
    return PipelineSpec.from_component({"labels": ["person"], "backend": block}, code=[CODE])


def write_corpus(folder: Path) -> Path:
    """Inputs of every format with every kind of bad document; returns ``folder``.

    a.txt: 7 documents, a blank line, a CRLF line ending and a UTF-8 BOM;
    b.jsonl: 5 records with ids, a line that is not JSON, an object without text, a document
    the backend fails on; c.spacy: 3 Docs with an earlier ORG entity and user data;
    d.txt: a line that is not UTF-8 between two good ones.
    """
    import spacy
    from spacy.tokens import DocBin

    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"Alice met Bob number {i} in Paris." for i in range(7)]
    (folder / "a.txt").write_bytes(
        BOM_BYTES + "\n".join(lines[:3]).encode() + b"\n\n" + lines[3].encode() + b"\r\n"
        + "\n".join(lines[4:]).encode() + b"\n"
    )  # fmt: skip
    records = [json.dumps({"id": i, "text": f"Carol saw Dave {i}."}) for i in range(5)]
    records[2:2] = ["not json", json.dumps({"id": 99, "body": "no text field"})]
    records.append(json.dumps({"id": 7, "text": "Gina will FAIL here."}))
    (folder / "b.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    nlp = spacy.blank("en")
    docs = []
    for i in range(3):
        doc = nlp(f"Acme hired Heidi {i}.")
        doc.ents = [doc.char_span(0, 4, label="ORG")]
        doc.user_data["batch"] = i
        docs.append(doc)
    DocBin(store_user_data=True, docs=docs).to_disk(folder / "c.spacy")
    (folder / "d.txt").write_bytes(b"Ivan is here.\nJudy \xff broken\nKen too.\n")
    return folder


BOM_BYTES = b"\xef\xbb\xbf"
# Shards of 2: the second holds two documents the backend fails on until healed.
FAILING_SHARD_LINES = [
    "Una one.",
    "Vic two.",
    "Wes will FAIL.",
    "Xia will FAIL.",
    "Yul five.",
    "Zoe six.",
]


def write_lines(folder: Path, lines: list[str]) -> tuple[Path, list[str]]:
    """``folder/docs.txt`` with one document per line; returns the folder and the lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, lines


def output_lines(out: Path) -> list[dict[str, Any]]:
    """The JSONL shards of a run, in shard order."""
    return [
        json.loads(line)
        for path in sorted((out / "shards").glob("*.jsonl"))
        if not path.name.endswith(".rejects.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def rejects(out: Path) -> list[dict[str, Any]]:
    path = out / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def logged(tmp: Path, name: str = "log.txt") -> list[str]:
    path = tmp / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
