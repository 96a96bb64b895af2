"""The distill workflow of a profile, measured: teacher vs student on the same gold dev
sentences, and the gold teacher (CoNLL-2003 train's own entities) as the student's upper bound,
for each student kind asked for.

Per teacher (the profile's reasoning_ner pipeline, then ``teacher.kind = gold``) it runs
``python -m training distill-data <profile>`` into OUTPUT/<teacher>, then per student kind
``distill-train`` and ``distill-evaluate`` into OUTPUT/<teacher>-<kind> (the data copied
there), each stage in its own process. Prints the data counts, each stage's wall time and
peak resident memory (of the stage process and the processes it waited for: spacy train, the
student's Python), and a table: reference string F1 (the paper's metric; for a spaCy ner
every entity is a string it answered, so its grounded and reference string F1 coincide),
offset F1, the student's agreement F1 with the teacher, and docs/s. The teacher's docs/s
comes from its evaluation; the student's is timed again in its own Python on
``--speed-docs`` dev sentences with 2 threads (the evaluation's few sentences are too quick
to time well).

    python bench/distill.py [--profile cpu] [--data ../shared/data] [--students cnn,transformer]
        [--student-python .venv-student/bin/python] [--transformer-steps 300] [--reuse-data]
        [--skip-runs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_stage(stage: str, profile: str, data: Path, output: Path, extra: list[str]) -> None:
    """Run one stage; print its wall time and peak RSS (with the processes it waited for)."""
    command = [sys.executable, "-m", "training", stage, profile, "--paths.data", str(data),
               "--paths.output", str(output), *extra]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{stage} failed (exit {process.returncode}): {' '.join(command)}")
    print(f"  {stage} {output.name}: {(time.perf_counter() - started) / 60:.1f} min, peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB, load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def time_student(model: Path, data: Path, n: int) -> float:
    """docs/s of the student over the first ``n`` CoNLL-2003 dev sentences, batched, with 2
    threads (run in the student's Python)."""
    import spacy
    import torch

    from spacy_reasoningner.benchmark.readers import read_bio

    torch.set_num_threads(2)
    texts = [r.text for r in read_bio(data / "conll2003" / "dev.txt")][:n]
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:64]))  # warm-up
    started = time.perf_counter()
    list(nlp.pipe(texts, batch_size=256))
    return len(texts) / (time.perf_counter() - started)


def student_speed(python: str, model: Path, data: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
           os.environ.get("PYTHONPATH")])), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    command = [python, __file__, "--time-student", str(model), "--data", str(data),
               "--speed-docs", str(n)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.split()[-1])


def averages(result: dict, metric: str) -> float | None:
    """The mean F1 of ``metric`` over the evaluated datasets (None: not measured)."""
    return result["average"]["all"].get(metric, {}).get("f1")


def docs_per_second(result: dict) -> float:
    sets = result["datasets"]
    seconds = sum(d["seconds_per_sentence"] * d["sentences"] for d in sets)
    return sum(d["sentences"] for d in sets) / seconds if seconds else 0.0


def percent(part: float | None, whole: float | None) -> str:
    return f"{100 * part / whole:.0f}%" if part is not None and whole else "-"


def row(label: str, result: dict, agreement: dict, docs_s: float) -> str:
    reference = averages(result, "reference") or averages(result, "grounded")
    agree = sum(agreement.values()) / len(agreement) if agreement else None
    return (f"{label:<30}{reference:>11.1f}{averages(result, 'grounded'):>10.1f}"
            f"{averages(result, 'offset'):>10.1f}"
            f"{(f'{agree:.1f}' if agree is not None else '-'):>10}{docs_s:>10.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "bench-distill")
    parser.add_argument("--students", default="cnn", help="comma-separated: cnn, transformer")
    parser.add_argument("--student-python", default=sys.executable,
                        help="the transformer student's Python (make student-venv)")  # fmt: skip
    parser.add_argument("--transformer-steps", type=int, default=300)
    parser.add_argument("--speed-docs", type=int, default=2000)
    parser.add_argument("--reuse-data", action="store_true",
                        help="keep distill-data outputs that exist (a long teacher run)")  # fmt: skip
    parser.add_argument("--skip-runs", action="store_true", help="only read earlier outputs")
    parser.add_argument("--time-student", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_student:  # in the student's Python, from student_speed
        print(time_student(args.time_student, args.data, args.speed_docs))
        return
    kinds = args.students.split(",")
    pythons = {"cnn": sys.executable, "transformer": args.student_python}
    # The cnn student runs in this Python (python = null), the transformer in its own.
    overrides = {"cnn": "null", "transformer": args.student_python}
    steps = ["--distill.student.training.training.max_steps", str(args.transformer_steps),
             "--distill.student.training.training.eval_frequency", "50",
             "--distill.student.training.training.accumulate_gradient", "1"]  # fmt: skip
    teachers = {"model": [], "gold": ["--distill.teacher.kind", "gold"]}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    for teacher, extra in teachers.items():
        data_dir = args.output / teacher / "distill" / "data"
        if not args.skip_runs and not (args.reuse_data and (data_dir / "report.json").exists()):
            run_stage("distill-data", args.profile, args.data, args.output / teacher, extra)
        report = json.loads((data_dir / "report.json").read_text())
        print(f"{teacher} data: {report['documents']} documents, kept {report['kept']} (train "
              f"{report['train']}, dev {report['dev']}), dropped {report['dropped']}, entities "
              f"{report['entities']}, teacher runs {report['teacher'].get('runs', '-')}")  # fmt: skip
        for kind in kinds if not args.skip_runs else []:
            output = args.output / f"{teacher}-{kind}"
            shutil.copytree(data_dir, output / "distill" / "data", dirs_exist_ok=True)
            student = ["--distill.student.kind", kind, "--distill.student.python", overrides[kind],
                       *(steps if kind == "transformer" else [])]  # fmt: skip
            for stage in ("distill-train", "distill-evaluate"):
                run_stage(stage, args.profile, args.data, output, [*extra, *student])
    print(f"{'pipeline':<30}{'ref str F1':>11}{'grounded':>10}{'offset F1':>10}"
          f"{'agree F1':>10}{'docs/s':>10}")  # fmt: skip
    for teacher in teachers:
        for i, kind in enumerate(kinds):
            distill = args.output / f"{teacher}-{kind}" / "distill"
            evaluation = json.loads((distill / "evaluation.json").read_text())
            if "teacher" in evaluation and i == 0:
                teacher_speed = docs_per_second(evaluation["teacher"])
                print(row("teacher (model)", evaluation["teacher"], {}, teacher_speed))
            speed = student_speed(pythons[kind], distill / "student" / "model-best", args.data,
                                  args.speed_docs)  # fmt: skip
            student = evaluation["student"]
            print(row(f"{kind} student ({teacher} teacher)", student,
                      evaluation.get("agreement", {}), speed))  # fmt: skip
            if "teacher" in evaluation:
                own = evaluation["teacher"]
                print(f"  of the teacher's: docs/s x{speed / teacher_speed:.0f}, string F1 "
                      f"{percent(averages(student, 'grounded'), averages(own, 'reference'))} "
                      f"(of its reference string F1), "
                      f"{percent(averages(student, 'grounded'), averages(own, 'grounded'))} "
                      f"(of its grounded), offset F1 "
                      f"{percent(averages(student, 'offset'), averages(own, 'offset'))}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
