"""Compile time of the grounded-answer constraint on windows of growing length.

For CrossNER science dev text cut to 200 ... 2,000 characters (the component's default
``max_chars``) and the 16 types of CrossNER science, prints xgrammar's compile time (min over
``--repeats``, SmolLM2's tokenizer, cache off) of:

* ``grammar``: ``spacy_reasoningner.grounded.grounded_answer_grammar`` (what the backends use);
* ``enum schema``: the alternative design, a JSON Schema whose mentions are an ``enum`` of the
  window's spans of at most 16 tokens (up to ``--enum-max-chars``: it grows quadratically).

    python bench/grounded_answers.py [--repeats 3]

Unaligned share and precision with and without grounding: ``python bench/default_model.py
--grounded false`` against the default.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import DEFAULT_DATA, data_argument

from spacy_reasoningner.benchmark.readers import load_label_map, read_bio
from spacy_reasoningner.grounded import grounded_answer_grammar
from spacy_reasoningner.protocol import MISC_LIKE_LABELS, Schema, answer_json_schema

LENGTHS = (200, 500, 1000, 2000)
ENUM_MAX_TOKENS = 16


def enum_schema(schema: Schema, text: str) -> dict:
    """The answer schema with mentions restricted to an enum of the text's spans."""
    tokens = list(re.finditer(r"\w+|[^\w\s]", text))
    spans = {
        text[tokens[i].start() : tokens[j].end()]: None
        for i in range(len(tokens))
        if re.match(r"\w", tokens[i].group())
        for j in range(i, min(i + ENUM_MAX_TOKENS, len(tokens)))
        if re.match(r"\w", tokens[j].group())
    }
    answer = answer_json_schema(schema)
    mentions = answer["properties"]["entities"]["properties"]
    for name in mentions:
        mentions[name] = {**mentions[name], "items": {"$ref": "#/$defs/span"}}
    answer["$defs"] = {"span": {"type": "string", "enum": list(spans)}}
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_argument(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--enum-max-chars", type=int, default=500)
    args = parser.parse_args()
    import xgrammar
    from transformers import AutoTokenizer

    from spacy_reasoningner.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct").path)
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    folder = (args.data or DEFAULT_DATA) / "crossner_science"
    labels = set(load_label_map(folder / "labels.json", "instructuie_name").values())
    schema = Schema.from_config(sorted(labels - MISC_LIKE_LABELS))
    text = " ".join(record.text for record in read_bio(folder / "dev.txt")[:60])

    def best(compile_one) -> float:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            compile_one()
            times.append(time.perf_counter() - started)
        return min(times)

    print(f"{'chars':>6} {'grammar chars':>13} {'grammar s':>10} {'enum chars':>10} {'enum s':>8}")
    for length in LENGTHS:
        window = text[:length]
        grammar = grounded_answer_grammar(schema, window).ebnf
        grammar_s = best(lambda grammar=grammar: compiler.compile_grammar(grammar))
        enum_cells = "         -        -"
        if length <= args.enum_max_chars:
            enum = json.dumps(enum_schema(schema, window))
            enum_s = best(lambda enum=enum: compiler.compile_json_schema(enum))
            enum_cells = f"{len(enum):10d} {enum_s:8.2f}"
        print(f"{length:6d} {len(grammar):13d} {grammar_s:10.3f} {enum_cells}", flush=True)


if __name__ == "__main__":
    main()
