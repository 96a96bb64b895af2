"""The HTML view: entities, reasoning and unaligned mentions, checked in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

from spacy_reasoningner.cli import app
from spacy_reasoningner.view import PALETTE, render_html, save_html

from ._scripted_backend import ScriptedBackend

TEXT = "Ada Lovelace met Charles Babbage in London."
REASONING = "Ada Lovelace and Charles Babbage are people; London is a city; Atlantis is not named."
ANSWER = (
    f"<think>{REASONING}</think>"
    '{"entities": {"person": ["Ada Lovelace", "Charles Babbage"], "location": ["London", "Atlantis"]}}'
)
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
def annotated():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"},
            "spans_key": "sc",
        },
    )
    pipe.backend = ScriptedBackend(lambda text: ANSWER)
    return list(nlp.pipe([TEXT, "Nothing here."])), pipe


def test_the_view_holds_entities_reasoning_and_unaligned_mentions(annotated):
    docs, pipe = annotated
    page = render_html(docs, component=pipe)
    assert page.count('<mark class="entity"') == 3
    assert REASONING in page
    assert "<td>Atlantis</td><td>location</td><td>not found in the text</td>" in page
    assert "Candidates with scores (3)" in page
    # Self-contained: nothing is fetched.
    assert "src=" not in page and "http" not in page.replace("http-equiv", "")


def test_a_doc_where_the_model_named_nothing_says_so():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={"labels": ["person"], "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}},
    )
    pipe.backend = ScriptedBackend(lambda text: '<think>No one.</think>{"entities": {}}')
    page = render_html([nlp("Nothing here.")], component=pipe)
    assert "the model named nothing" in page and "every mention was found" not in page


def test_the_usage_line_says_how_many_completions_its_tokens_cover():
    usage = {
        "backend": "scripted",
        "prompt_tokens": 900,
        "completion_tokens": 150,
        "seconds": 2.5,
        "windows": [{"completions": 5}],  # samples = 5
    }
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(
        "reasoning_ner",
        config={"labels": ["person"], "backend": {"@reasoning_ner_backends": "tests.Scripted.v1"}},
    )
    doc = nlp.make_doc("Ada came.")
    doc._.ner_usage = usage
    page = render_html([doc], component=pipe)
    assert "1 window(s), 5 completion(s): 900 prompt + 150 completion tokens, 2.50 s" in page


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--no-first-run", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
def test_chromium_shows_the_entities_and_the_reasoning(annotated, tmp_path):
    from PIL import Image

    docs, pipe = annotated
    page = save_html(docs, tmp_path / "view.html", component=pipe)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert dom.count('class="entity"') == 3 and REASONING in dom
    shot = tmp_path / "view.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,800", page.as_uri())
    image = Image.open(shot).convert("RGB")
    counts = {}
    for color in image.getcolors(maxcolors=1 << 20):
        counts[color[1]] = counts.get(color[1], 0) + color[0]

    def pixels(hex_color: str) -> int:
        return counts.get(tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5)), 0)

    # The two entity colours (person, location) and the reasoning panel fill real areas.
    assert pixels(PALETTE[0]) > 2000, "person marks not drawn"
    assert pixels(PALETTE[1]) > 800, "location mark not drawn"
    assert pixels("#eef3fb") > 20000, "reasoning panel not drawn"


def test_predict_writes_the_view(tmp_path):
    from . import _scripted_backend  # noqa: F401 (registers the scripted backend)

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {"@reasoning_ner_backends": "tests.Scripted.v1", "completion": ANSWER},
        },
    )
    nlp.to_disk(tmp_path / "pipeline")
    view = tmp_path / "view.html"
    result = CliRunner().invoke(
        app, ["predict", "--pipeline", str(tmp_path / "pipeline"), "--html", str(view), TEXT]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["reasoning"] == REASONING
    page = view.read_text()
    assert page.count('<mark class="entity"') == 3 and REASONING in page
