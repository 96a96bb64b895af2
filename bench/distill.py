"""The distill workflow of a profile, measured: teacher vs student on the same gold dev
sentences, and the gold teacher (CoNLL-2003 train's own entities) as the student's upper bound.

Runs ``python -m training distill-data / distill-train / distill-evaluate <profile>`` twice,
each stage in its own process: with the profile's teacher (a reasoning_ner pipeline), then
with ``teacher.kind = gold`` into a sibling folder. Prints per run the data counts (kept and
dropped documents), the wall time and the peak resident memory of the stage processes, and a
table: reference string F1 (the paper's metric; for a spaCy ner every entity is a string it
answered, so its grounded and reference string F1 coincide), offset F1, the student's
agreement F1 with the teacher, and docs/s. The student's docs/s is timed again on
``--speed-docs`` dev sentences (the evaluation's few sentences are too quick to time well).

    python bench/distill.py [--profile cpu] [--data ../shared/data] [--skip-runs]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("distill-data", "distill-train", "distill-evaluate")


def run_stages(profile: str, data: Path, output: Path, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and the largest peak RSS (MB) of the stage processes."""
    started = time.perf_counter()
    peak = 0.0
    for stage in STAGES:
        command = [sys.executable, "-m", "training", stage, profile, "--paths.data", str(data),
                   "--paths.output", str(output), *extra]  # fmt: skip
        subprocess.run(command, check=True)
        # ru_maxrss of children: the largest of the stage processes waited for so far.
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return time.perf_counter() - started, peak


def student_speed(model: Path, data: Path, n: int) -> float:
    """docs/s of the student over the first ``n`` CoNLL-2003 dev sentences, batched."""
    import spacy

    from spacy_reasoningner.benchmark.readers import read_bio

    texts = [r.text for r in read_bio(data / "conll2003" / "dev.txt")][:n]
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:64]))  # warm-up
    started = time.perf_counter()
    list(nlp.pipe(texts, batch_size=256))
    return len(texts) / (time.perf_counter() - started)


def averages(result: dict, metric: str) -> float | None:
    """The mean F1 of ``metric`` over the evaluated datasets (None: not measured)."""
    return result["average"]["all"].get(metric, {}).get("f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=root / "outputs" / "bench-distill")
    parser.add_argument("--speed-docs", type=int, default=2000)
    parser.add_argument("--skip-runs", action="store_true", help="only read earlier outputs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    runs = {"teacher": (args.output / "model", []), "gold": (args.output / "gold", [
        "--distill.teacher.kind", "gold"])}  # fmt: skip
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    for name, (output, extra) in runs.items():
        if not args.skip_runs:
            wall, peak = run_stages(args.profile, args.data, output, extra)
            print(f"{name} run: distill-data + distill-train + distill-evaluate in {wall / 60:.1f} "
                  f"min, peak RSS of a stage process {peak:.0f} MB")  # fmt: skip
        report = json.loads((output / "distill" / "data" / "report.json").read_text())
        print(f"{name} data: {report['documents']} documents, kept {report['kept']} (train "
              f"{report['train']}, dev {report['dev']}), dropped {report['dropped']}, entities "
              f"{report['entities']}")  # fmt: skip
    header = f"{'pipeline':<26}{'ref str F1':>11}{'grounded':>10}{'offset F1':>10}{'agree F1':>10}{'docs/s':>10}"
    print(header)
    for name, (output, _) in runs.items():
        evaluation = json.loads((output / "distill" / "evaluation.json").read_text())
        for role in ("teacher", "student"):
            if role not in evaluation:
                continue
            result = evaluation[role]
            sets = result["datasets"]
            seconds = sum(d["seconds_per_sentence"] * d["sentences"] for d in sets)
            docs_s = sum(d["sentences"] for d in sets) / seconds if seconds else 0.0
            if role == "student":
                docs_s = student_speed(output / "distill" / "student" / "model-best", args.data,
                                       args.speed_docs)  # fmt: skip
            reference = averages(result, "reference") or averages(result, "grounded")
            agreement = evaluation.get("agreement", {}) if role == "student" else {}
            agree = sum(agreement.values()) / len(agreement) if agreement else None
            label = f"{role} ({'gold' if name == 'gold' else 'model'} teacher)"
            print(f"{label:<26}{reference:>11.1f}{averages(result, 'grounded'):>10.1f}"
                  f"{averages(result, 'offset'):>10.1f}"
                  f"{(f'{agree:.1f}' if agree is not None else '-'):>10}{docs_s:>10.1f}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
