"""The launcher: the plans the profiles' [launch] sections give, the checks that stop a launch
before anything starts, the servers it starts and stops, and a CPU rehearsal of each GPU
profile's SFT and GRPO through the same code path (accelerate launch, one process)."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from training.config import load_profile
from training.grpo import check_rollout_server
from training.launch import (
    LaunchError,
    Server,
    answers,
    check_inputs,
    launch,
    plan_stage,
    rehearsal,
    running,
)
from training.samples import Sample


def plan(stage: str, profile: str) -> object:
    return plan_stage(stage, profile, [], load_profile(profile))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("profile", ["gpu-1.7b", "gpu-8b"])
def test_gpu_plans_follow_the_launch_section(profile: str) -> None:
    sft = plan("sft", profile)
    assert sft.command[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert sft.command[4].endswith("configs/accelerate/zero3.yaml")
    assert sft.command[5:7] == ["--num_processes", "8"]
    assert sft.command[-3:] == ["training", "sft", profile]
    assert sft.gpus == list(range(8)) and sft.servers == []

    grpo = plan("grpo", profile)
    [rollout] = grpo.servers
    assert grpo.gpus == list(range(1, 8)) and rollout.gpus == [0]
    assert (
        "--num_processes" in grpo.command
        and grpo.command[grpo.command.index("--num_processes") + 1] == "7"
    )
    assert rollout.command[2:5] == ["trl.cli.main", "vllm-serve", "--model"]
    assert rollout.command[5] == f"outputs/{profile}/sft/model"
    assert rollout.health_url == "http://127.0.0.1:8000/health"
    trainer = load_profile(profile)["grpo"]["trainer"]
    per_step = trainer["per_device_train_batch_size"] * trainer["gradient_accumulation_steps"] * 7
    assert per_step == 448 and per_step % trainer["num_generations"] == 0  # as the reference

    data = plan("data", profile)
    [judge] = data.servers
    assert data.gpus == [0, 1, 2, 3] and judge.gpus == [4, 5, 6, 7]
    assert judge.command[2:6] == [
        "vllm.entrypoints.openai.api_server",
        "--model",
        "Qwen/Qwen3-32B",
        "--host",
    ]
    assert "--tensor-parallel-size" in judge.command
    assert judge.health_url == "http://127.0.0.1:8001/health"
    assert plan("evaluate", profile).gpus == [0]


def test_cpu_plans_are_plain_processes() -> None:
    for stage in ("data", "sft", "grpo", "assemble", "evaluate"):
        stage_plan = plan(stage, "cpu")
        assert stage_plan.command[1:3] == ["-m", "training"] and not stage_plan.servers
        assert stage_plan.gpus_needed() == 0
    rehearsed = rehearsal(plan("grpo", "gpu-8b"))
    assert "--cpu" in rehearsed.command and not rehearsed.servers and rehearsed.gpus == []
    assert rehearsed.command[-4:] == [
        "--grpo.trainer.bf16",
        "false",
        "--grpo.trainer.use_vllm",
        "false",
    ]


def test_what_is_missing_stops_the_launch_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        launch("grpo", "gpu-8b", ["--paths.data", str(tmp_path), "--paths.output", str(tmp_path)])
    message = str(caught.value)
    assert f"no model at {tmp_path}/sft/model: run the sft stage first" in message
    assert "training source 'conll2003': no file" in message
    assert "runs on 8 GPUs (7 for the stage, 1 for the rollout server" in message
    with pytest.raises(LaunchError) as caught:
        launch("data", "gpu-1.7b", ["--paths.data", str(tmp_path)])
    # The Pile-NER corpus is a declared asset: the message says where it comes from.
    assert "spacy project assets --extra" in str(caught.value)
    assert "Universal-NER/Pile-NER-type" in str(caught.value)
    not_uniner = tmp_path / "pile-ner" / "pile-ner.json"
    not_uniner.parent.mkdir()
    not_uniner.write_text('[{"sentence": "x"}]')
    with pytest.raises(LaunchError, match="not a UniNER conversation file"):
        launch("data", "gpu-1.7b", ["--paths.data", str(tmp_path)])
    assert time.monotonic() - started < 60  # no waiting for servers that are not there


def test_grpo_inputs_follow_the_prompt_pool(tmp_path: Path) -> None:
    """The launcher checks the pool the stage will read: our sources when the InstructUIE
    folder is absent (the fallback), every InstructUIE set once the folder is there."""
    profile = load_profile("gpu-8b", {"paths.data": str(tmp_path), "paths.output": str(tmp_path)})
    assert any("training source 'conll2003': no file" in p for p in check_inputs("grpo", profile))
    (tmp_path / "IE_INSTRUCTIONS" / "NER" / "ACE 2005").mkdir(parents=True)
    problems = check_inputs("grpo", profile)
    assert not any("conll2003" in p for p in problems)
    assert any(
        "InstructUIE sets incomplete" in p and "WikiNeural/train.json" in p for p in problems
    )


def test_grpo_without_its_rollout_server_fails_at_once() -> None:
    port = free_port()
    args = SimpleNamespace(
        vllm_server_base_url=None, vllm_server_host="127.0.0.1", vllm_server_port=port
    )
    started = time.monotonic()
    with pytest.raises(
        ConnectionError, match=f"no vLLM rollout server answers at http://127.0.0.1:{port}"
    ):
        check_rollout_server(args)
    assert time.monotonic() - started < 10


SERVER = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    time.sleep(1)  # a model takes its time to load
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
    """
)


def test_servers_run_while_the_stage_runs(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    server = Server("rollout", [sys.executable, str(script), str(port)], [], url, 60.0)
    with running([server], tmp_path / "logs"):
        assert answers(url)
        with (
            pytest.raises(LaunchError, match="something already answers"),
            running([server], tmp_path),
        ):
            pass
    assert not answers(url)  # stopped after the stage
    crashing = Server(
        "judge", [sys.executable, "-c", "raise SystemExit('no GPU found')"], [], url, 60.0
    )
    started = time.monotonic()
    failure = r"(?s)judge server exited with code 1.*no GPU found"
    with pytest.raises(LaunchError, match=failure), running([crashing], tmp_path / "logs"):
        pass
    assert time.monotonic() - started < 30


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four CG-format rows (save_to_disk)."""
    from datasets import Dataset

    texts = ["Ada Lovelace met Charles Babbage in London.", "Paris is in France."] * 2
    rows = [
        Sample(
            f"g{i}",
            "toy",
            text,
            ["location", "person"],
            [(text.split()[0], "person")],
            reasoning="A short rationale.",
        ).to_row()
        for i, text in enumerate(texts)
    ]
    folder = tmp_path_factory.mktemp("cg") / "dataset"
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("profile", ["gpu-1.7b", "gpu-8b"])
def test_gpu_profiles_rehearse_sft_and_grpo_on_cpu(
    profile: str, tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """One step of each trainer stage through the launcher's own path: accelerate launch,
    the profile's trainer settings (ZeRO-3 and bf16 aside), then the next stage's model."""
    common = ["--paths.output", str(tmp_path), "--paths.data", str(tmp_path)]
    sft = [
        "--sft.model", str(tiny_model_dir),
        "--sft.dataset", str(tiny_dataset),
        "--sft.eval_size", "2",
        "--sft.trainer.max_steps", "1",
        "--sft.trainer.per_device_train_batch_size", "1",
        "--sft.trainer.gradient_accumulation_steps", "1",
        "--sft.trainer.max_length", "256",
        "--sft.trainer.dataset_num_proc", "1",
        "--sft.trainer.dataloader_num_workers", "0",
    ]  # fmt: skip
    assert launch("sft", profile, [*common, *sft], rehearse=True) == 0
    assert (tmp_path / "sft" / "model" / "model.safetensors").is_file()
    grpo = [
        "--grpo.prompts.origin", "dataset",
        "--grpo.prompts.dataset", str(tiny_dataset),
        "--grpo.trainer.max_steps", "1",
        "--grpo.trainer.num_generations", "2",
        "--grpo.trainer.per_device_train_batch_size", "2",
        "--grpo.trainer.gradient_accumulation_steps", "1",
        "--grpo.trainer.max_completion_length", "8",
    ]  # fmt: skip
    assert launch("grpo", profile, [*common, *grpo], rehearse=True) == 0
    assert (tmp_path / "grpo" / "model" / "model.safetensors").is_file()
    assert len((tmp_path / "grpo" / "prompts.jsonl").read_text().splitlines()) == 4
    state = (tmp_path / "grpo" / "trainer_state.json").read_text()
    assert '"global_step": 1' in state
    # The arguments TRL trained with are the profile's recipe (the reference's loss, clipping,
    # KL and schedule, TRL's newer corrections off), but for what this test set above.
    import torch

    saved = next((tmp_path / "grpo").rglob("training_args.bin"))  # the model's or checkpoint's
    args = torch.load(saved, weights_only=False)  # written by this run
    recipe = load_profile(profile)["grpo"]["trainer"]
    overridden = {a.removeprefix("--grpo.trainer.") for a in grpo[::2] if "trainer." in a}
    overridden |= {"bf16", "use_vllm"}  # what the rehearsal turns off on CPU
    compared = {k: v for k, v in recipe.items() if k not in overridden and hasattr(args, k)}
    assert {"loss_type", "beta", "epsilon_high", "lr_scheduler_type"} <= set(compared)
    for key, value in compared.items():
        found = getattr(args, key)
        found = found.value if hasattr(found, "value") else found  # enums: their value
        if key == "report_to":  # transformers reads "none" as no integration
            value = [] if value == "none" else value
        assert found == value, key
