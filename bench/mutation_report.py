"""Kill rate per module of the last mutation run (`make mutants`, mutmut's results in mutants/).

    python bench/mutation_report.py [--survivors]

A mutant is killed when a test failed or timed out on it (or the type check caught it),
survived when every test covering it passed, "no tests" when no fast test reaches its
function; a stopped run leaves the rest unchecked. The kill rate is killed over checked
(killed + survived + no tests), so a partial run reports what it has checked so far.
``--survivors`` lists the mutants that survived (`mutmut show NAME` prints the change).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path(__file__).resolve().parents[1] / "mutants"
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
CHECKED = KILLED | {"survived", "no tests"}


def module_results(mutants: Path = MUTANTS) -> dict[str, Counter[str]]:
    """The mutants' statuses counted per source file (as a dotted module name)."""
    results: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not exit_codes:
            continue
        module = ".".join(meta.relative_to(mutants).with_suffix("").with_suffix("").parts)
        results[module] = Counter(status_by_exit_code[code] for code in exit_codes.values())
    return results


def survivors(mutants: Path = MUTANTS) -> list[str]:
    names = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        names += [
            name for name, code in exit_codes.items() if status_by_exit_code[code] == "survived"
        ]
    return names


def table(results: dict[str, Counter[str]]) -> str:
    lines = [
        "| module | mutants | checked | killed | survived | no tests | kill rate |",
        "|---|---|---|---|---|---|---|",
    ]
    total: Counter[str] = Counter()
    for module, counts in [*results.items(), ("**all**", None)]:
        counts = total if counts is None else counts
        if module != "**all**":
            total.update(counts)
        killed = sum(counts[status] for status in KILLED)
        checked = sum(counts[status] for status in CHECKED)
        rate = f"{100 * killed / checked:.1f}%" if checked else "-"
        lines.append(
            f"| {module} | {counts.total()} | {checked} | {killed} | {counts['survived']} "
            f"| {counts['no tests']} | {rate} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args()
    results = module_results()
    if not results:
        raise SystemExit(f"no mutation results in {MUTANTS}: run `make mutants` first")
    print(table(results))
    if args.survivors:
        print("\n".join(survivors()))


if __name__ == "__main__":
    main()
