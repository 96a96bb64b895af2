"""Documents per second of everything but generation: parse + grounding + setting annotations.

Sentence-length documents (CrossNER and CoNLL-2003 dev) get precomputed completions built
from their gold entities (a think block of a few hundred characters, then the JSON answer).
``reasoning_ner`` runs through its ``pipe`` with a backend that returns those completions
instantly; spacy-llm's NER.v3 task parses equivalent chain-of-thought responses and assigns
the spans (``task.parse_responses``, as its ``llm`` component does); for reference, its whole
``llm`` component also runs with a model that replays the same responses (prompt rendering
included, as in our ``pipe``). Docs are tokenized before timing; each repeat uses fresh Docs;
the systems are interleaved and the best repeat counts.

``--grammars N`` also times, on the first N documents of each set, what a grounded answer
(the default) costs per document before generation and outside this comparison: writing its
grammar, xgrammar compiling it for the default model's tokenizer, and setting up its matcher
(the forced opening).

    python bench/overhead.py [--data ../shared/data] [--repeats 5] [--profile] [--grammars 200]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable

import spacy
from _common import (
    CROSSNER_DATASETS,
    data_argument,
    gold_entries,
    load_dataset,
    make_nlp,
    order_entries,
    ours_completion,
    spacy_llm_response,
)
from spacy_llm.registry import registry as llm_registry
from spacy_llm.tasks.ner.registry import make_ner_task_v3

from spacy_reasoningner.sharding import plan_windows

_REPLAY: deque[str] = deque()  # responses for spacy-llm's llm component, in order


@llm_registry.llm_models("bench.Replay.v1")
def make_replay_model() -> Callable[[Iterable[Iterable[str]]], Iterable[list[str]]]:
    def model(prompts: Iterable[Iterable[str]]) -> Iterable[list[str]]:
        for shard_prompts in prompts:
            yield [_REPLAY.popleft() for _ in shard_prompts]

    return model


def prepare(args: argparse.Namespace) -> list[dict]:
    """Per dataset: the components, the texts and both systems' answers (text order)."""
    suites = []
    for name in args.datasets:
        records, labels = load_dataset(args.data, name)
        nlp, backend = make_nlp(labels)
        component = nlp.get_pipe("reasoning_ner")
        answers = [
            order_entries(gold_entries(r), "text", labels, random.Random(0)) for r in records
        ]
        llm_nlp = spacy.blank("en")
        with warnings.catch_warnings():  # "model does not provide context length": no sharding
            warnings.simplefilter("ignore")
            llm_nlp.add_pipe(
                "llm",
                config={
                    "task": {"@llm_tasks": "spacy.NER.v3", "labels": labels},
                    "model": {"@llm_models": "bench.Replay.v1"},
                    "validate_types": False,  # it cannot read postponed annotations
                },
            )
        suites.append(
            {
                "nlp": nlp,
                "component": component,
                "backend": backend,
                "task": make_ner_task_v3(labels=labels),
                "llm": llm_nlp.get_pipe("llm"),
                "texts": [r.text for r in records],
                "ours": [
                    ours_completion(a, component.schema, reasoning=not args.no_reasoning)
                    for a in answers
                ],
                "theirs": [spacy_llm_response(a) for a in answers],
            }
        )
    return suites


def run_ours(suite: dict, batch_size: int) -> Callable[[], object]:
    docs = [suite["nlp"].make_doc(t) for t in suite["texts"]]
    suite["backend"].enqueue((None, c) for c in suite["ours"])
    return lambda: list(suite["component"].pipe(docs, batch_size=batch_size))


def run_theirs(suite: dict, batch_size: int) -> Callable[[], object]:
    shards = [[suite["nlp"].make_doc(t)] for t in suite["texts"]]
    responses = [[r] for r in suite["theirs"]]
    return lambda: list(suite["task"].parse_responses(shards, responses))


def run_theirs_component(suite: dict, batch_size: int) -> Callable[[], object]:
    docs = [suite["nlp"].make_doc(t) for t in suite["texts"]]
    _REPLAY.extend(suite["theirs"])
    return lambda: list(suite["llm"].pipe(docs, batch_size=batch_size))


def run_prompting(suite: dict, batch_size: int) -> Callable[[], object]:
    """Only the pre-generation part of our pipe: window planning and prompt rendering."""
    docs = [suite["nlp"].make_doc(t) for t in suite["texts"]]
    component = suite["component"]
    task, settings = component.task, component.settings

    def run() -> None:
        for doc in docs:
            text = doc.text
            windows = plan_windows(doc, settings.max_chars, settings.window_overlap, text=text)
            task.requests([text[w.start : w.end] for w in windows])

    return run


SYSTEMS = {
    "reasoning_ner pipe": run_ours,
    "spacy-llm NER.v3 parse_responses": run_theirs,
    "spacy-llm llm component (replay)": run_theirs_component,
    "reasoning_ner windows + prompts": run_prompting,
}


def time_system(suites: list[dict], make_run: Callable, args: argparse.Namespace) -> list[float]:
    """Docs per second of each repeat over all suites (fresh Docs for every repeat)."""
    rates = []
    n_docs = sum(len(s["texts"]) for s in suites)
    for _ in range(args.repeats):
        runs = [make_run(s, args.batch_size) for s in suites]  # untimed: tokenization, queueing
        start = time.perf_counter()
        for run in runs:
            run()
        rates.append(n_docs / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(parser)
    parser.add_argument("--datasets", nargs="+", default=[*CROSSNER_DATASETS, "conll2003"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="docs per pipe batch (ours)")
    parser.add_argument(
        "--no-reasoning", action="store_true", help="completions without a think block"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one pass of ours, print hot spots"
    )
    parser.add_argument(
        "--grammars", type=int, default=0, help="time grounded answer grammars on N docs a set"
    )
    args = parser.parse_args()

    suites = prepare(args)
    n_docs = sum(len(s["texts"]) for s in suites)
    mean_len = statistics.mean(len(c) for s in suites for c in s["ours"])
    mean_llm = statistics.mean(len(c) for s in suites for c in s["theirs"])
    print(
        f"{n_docs} docs, mean {statistics.mean(len(t) for s in suites for t in s['texts']):.0f} chars; "
        f"completions: ours mean {mean_len:.0f} chars, spacy-llm mean {mean_llm:.0f} chars"
    )
    # Interleave the systems so that drifts in machine speed hit all alike.
    rates: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    for _ in range(2):
        for name, make_run in SYSTEMS.items():
            rates[name] += time_system(suites, make_run, args)
    best = {name: max(r) for name, r in rates.items()}
    print(f"{'system':<50}{'best docs/s':>12}{'median':>10}{'us/doc':>8}")
    for name, r in rates.items():
        print(
            f"{name:<50}{best[name]:>12,.0f}{statistics.median(r):>10,.0f}{1e6 / best[name]:>8.1f}"
        )
    # Parse + grounding + annotations alone: the pipe less its pre-generation part.
    alone = 1 / (1 / best["reasoning_ner pipe"] - 1 / best["reasoning_ner windows + prompts"])
    print(
        f"{'reasoning_ner parse + ground + set (derived)':<50}{alone:>12,.0f}{'':>10}{1e6 / alone:>8.1f}"
    )
    theirs = best["spacy-llm NER.v3 parse_responses"]
    print(
        f"ratio pipe / spacy-llm parse_responses: {best['reasoning_ner pipe'] / theirs:.2f}x; "
        f"parse+ground+set / spacy-llm parse_responses: {alone / theirs:.2f}x; "
        f"pipe / spacy-llm llm component: "
        f"{best['reasoning_ner pipe'] / best['spacy-llm llm component (replay)']:.2f}x"
    )
    if args.profile:
        profile(suites, args)
    if args.grammars:
        time_grammars(suites, args.grammars)


def time_grammars(suites: list[dict], n: int) -> None:
    """Milliseconds per document of a grounded answer's constraint: the grammar's text, its
    compilation (the backend's own compiler, as a document's first answer pass compiles it),
    and its matcher with the forced opening."""
    from spacy_reasoningner.backends.answer_grammars import AnswerGrammars
    from spacy_reasoningner.backends.transformers import TransformersBackend
    from spacy_reasoningner.grounded import grounded_answer_grammar

    backend = TransformersBackend()
    backend.load()
    backend._grammar('root ::= "{}"')  # builds the compiler's tokenizer tables once
    times: dict[str, list[float]] = {"grammar text": [], "compile": [], "matcher": []}
    for suite in suites:
        schema = suite["component"].schema
        for text in suite["texts"][:n]:
            started = time.perf_counter()
            grammar = grounded_answer_grammar(schema, text)
            written = time.perf_counter()
            compiled = backend._grammar(grammar)
            compiled_at = time.perf_counter()
            AnswerGrammars([compiled], backend.tokenizer)
            done = time.perf_counter()
            times["grammar text"].append(written - started)
            times["compile"].append(compiled_at - written)
            times["matcher"].append(done - compiled_at)
    total = [sum(parts) for parts in zip(*times.values(), strict=True)]
    print(f"grounded answer constraint, {len(total)} docs ({n} a set), default model's tokenizer")
    print(f"{'part':<16}{'mean ms':>10}{'median':>10}{'p95':>10}{'max':>10}")
    for name, values in [*times.items(), ("total", total)]:
        ordered = sorted(values)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        print(
            f"{name:<16}{1e3 * statistics.mean(values):>10.2f}{1e3 * statistics.median(values):>10.2f}"
            f"{1e3 * p95:>10.2f}{1e3 * ordered[-1]:>10.2f}"
        )


# Functions the component calls per window or per doc, timed in the module that looks them
# up: the component plans windows and merges them, the task renders, parses and grounds,
# the ents filter resolves overlaps.
STAGES = {
    "spacy_reasoningner.component": ("plan_windows", "dedupe_spans"),
    "spacy_reasoningner.task": ("render_messages", "parse_completion", "ground_mentions"),
    "spacy_reasoningner.alignment": ("resolve_overlaps",),
}


def profile(suites: list[dict], args: argparse.Namespace) -> None:
    """Time per stage of our pipe, then cProfile's hot spots (cProfile inflates code that
    creates many small objects, such as Doc.text building one Token per token)."""
    import importlib

    spent: Counter[str] = Counter()

    def timed(name: str, function: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    originals = {
        (module, name): getattr(importlib.import_module(module), name)
        for module, names in STAGES.items()
        for name in names
    }
    n_docs = sum(len(s["texts"]) for s in suites)
    try:
        for (module, name), function in originals.items():
            setattr(importlib.import_module(module), name, timed(name, function))
        runs = [run_ours(s, args.batch_size) for s in suites]
        start = time.perf_counter()
        for run in runs:
            run()
        total = time.perf_counter() - start
    finally:
        for (module, name), function in originals.items():
            setattr(importlib.import_module(module), name, function)
    docs = [s["nlp"].make_doc(t) for s in suites for t in s["texts"]]
    start = time.perf_counter()
    for doc in docs:
        doc.text  # noqa: B018 (the cost of one Doc.text, rebuilt from the tokens on each access)
    spent["(one Doc.text access, included above)"] = time.perf_counter() - start
    print(
        f"\nstages of reasoning_ner pipe (one pass, timers included): {1e6 * total / n_docs:.1f} us/doc"
    )
    for name, seconds in [
        *spent.most_common(),
        (
            "(rest of the component)",
            total - sum(v for k, v in spent.items() if not k.startswith("(")),
        ),
    ]:
        print(f"  {name:<42}{1e6 * seconds / n_docs:>8.1f} us/doc {100 * seconds / total:>5.1f}%")
    runs = [run_ours(s, args.batch_size) for s in suites]
    profiler = cProfile.Profile()
    profiler.enable()
    for run in runs:
        run()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
