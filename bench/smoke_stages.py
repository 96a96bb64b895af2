"""Wall time and peak memory of each step of the smoke profile's workflows, run as a user
types them (`spacy project run <step> . --vars.profile smoke`), into a fresh folder.

Peak memory is the largest resident set of any one process of the step (the step's Python, or
a server it started, such as the judge's `vllm serve`), read from ``wait4``'s rusage, which
covers the waited-for descendants; it is not the sum of processes that ran side by side.

    python bench/smoke_stages.py [--data ../shared/data] [--workflows all,distill]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import srsly

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def run_step(step: str, data: Path, folder: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in GiB, exit status) of one `spacy project run` step."""
    command = [sys.executable, "-m", "spacy", "project", "run", step, "."]
    command += ["--vars.profile", "smoke", "--vars.data", str(data)]
    command += ["--vars.outputs", str(folder / "outputs"), "--vars.packages", str(folder / "pkg")]
    log = (folder / f"{step}.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4, not Popen
    log.close()
    return seconds, usage.ru_maxrss / 1024**2, code  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workflows", default="all,distill")
    parser.add_argument("--keep", type=Path, default=None, help="write here instead of a temp dir")
    args = parser.parse_args()
    workflows = srsly.read_yaml(ROOT / "project.yml")["workflows"]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="smoke-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; logs in {folder}")
    print("| workflow | step | wall (s) | peak RSS (GiB) | exit |\n|---|---|---|---|---|")
    total = 0.0
    for workflow in args.workflows.split(","):
        for step in workflows[workflow]:
            if workflow != "all" and step in workflows["all"]:
                continue  # run once (prepare)
            seconds, peak, code = run_step(step, args.data, folder)
            total += seconds
            print(f"| {workflow} | {step} | {seconds:.0f} | {peak:.2f} | {code} |", flush=True)
            if code != 0:
                raise SystemExit(f"{step} failed: see {folder / (step + '.log')}")
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
