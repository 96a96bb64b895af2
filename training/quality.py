"""Quality control of reasoning samples; every decision is kept with its reason.

Cheap checks run first on every draft (structure, gold agreement); the judge, a model call,
only sees drafts that passed them. A sample is kept when every check it went through passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from spacy_reasoningner.alignment import find_word_occurrences
from spacy_reasoningner.backends.base import Backend, GenerationSettings
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import ChatMessages, normalize_mention, render_answer, string_prf

from .samples import gold_entities, record_schema
from .teacher import Draft

# Check names, as they appear in the per-sample log and the report.
PARSED = "parsed"
COMPLETE = "not truncated"
IN_SCHEMA = "labels in schema"
HAS_REASONING = "has reasoning"
IN_TEXT = "mentions in text"
COVERED = "entities discussed in reasoning"
AGREES = "agrees with gold"
JUDGED = "judge score"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


def structural_checks(record: NERRecord, draft: Draft, *, require_coverage: bool) -> list[Check]:
    parsed = draft.parsed
    checks = []
    if parsed is not None:
        checks.append(Check(PARSED, parsed.parsed, "; ".join(parsed.issues)))
        checks.append(Check(COMPLETE, not draft.truncated, "cut by the token budget"))
        outside = sorted({label for label, _ in parsed.out_of_schema})
        checks.append(Check(IN_SCHEMA, not outside, f"labels {outside}" if outside else ""))
    checks.append(Check(HAS_REASONING, bool(draft.reasoning.strip())))
    mentions = [(m, t) for t, ms in draft.entities.items() for m in ms]
    missing = [m for m, _ in mentions if not find_word_occurrences(record.text, m, fuzzy=True)]
    checks.append(Check(IN_TEXT, not missing, f"not in the text: {missing}" if missing else ""))
    if require_coverage:
        thought = f" {normalize_mention(draft.reasoning)} "
        silent = [m for m, _ in mentions if f" {normalize_mention(m)} " not in thought]
        checks.append(
            Check(COVERED, not silent, f"not named in the reasoning: {silent}" if silent else "")
        )
    return checks


def gold_check(record: NERRecord, draft: Draft, min_f1: float) -> Check:
    """String-level F1 of the draft's answer against gold (1.0 when both are empty)."""
    predicted = [(m, t) for t, ms in draft.entities.items() for m in ms]
    gold = [(m, t) for t, ms in gold_entities(record).items() for m in ms]
    f1 = string_prf(predicted, gold).f1 if predicted or gold else 1.0
    return Check(AGREES, f1 >= min_f1, f"F1 {f1:.3f} (minimum {min_f1})")


# --------------------------------------------------------------------------- judge

_JUDGE = """You check training samples for named entity recognition. A teacher read the text, \
reasoned, and answered with the entities of the schema's types.

Text: {text}
Schema: {schema}

Reasoning:
{reasoning}

Answer: {answer}

Score the sample from 0 to 10 on two criteria:
- coherence: the reasoning goes step by step, discusses every entity of the answer and \
leads to exactly this answer;
- accuracy: every entity of the answer is in the text and has the right type, and no \
entity of a schema type is missing.
Reply with JSON only: {{"coherence": <0-10>, "accuracy": <0-10>, "justification": "<one sentence>"}}"""


@dataclass
class Judgement:
    coherence: float
    accuracy: float
    justification: str

    @property
    def score(self) -> float:
        return min(self.coherence, self.accuracy)


def judge_messages(record: NERRecord, draft: Draft) -> ChatMessages:
    schema = record_schema(record)
    content = _JUDGE.format(
        text=record.text,
        schema=schema.schema_json,
        reasoning=draft.reasoning,
        answer=render_answer(draft.entities, schema),
    )
    return [{"role": "user", "content": content}]


_SCORE = re.compile(r'"?(coherence|accuracy)"?\s*[:=]\s*"?(\d+(?:\.\d+)?)', re.IGNORECASE)


def parse_judgement(text: str) -> Judgement | None:
    """The judge's scores from its reply (a JSON object, or failing that ``key: number``
    pairs anywhere in it); None when either score is missing or outside 0-10."""
    scores: dict[str, float] = {}
    justification = ""
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and {"coherence", "accuracy"} <= set(value):
            try:
                scores = {k: float(value[k]) for k in ("coherence", "accuracy")}
            except (TypeError, ValueError):
                continue
            justification = str(value.get("justification", ""))
            break
    if not scores:
        for key, number in _SCORE.findall(text):
            scores.setdefault(key.lower(), float(number))
    if set(scores) != {"coherence", "accuracy"} or not all(0 <= s <= 10 for s in scores.values()):
        return None
    return Judgement(scores["coherence"], scores["accuracy"], justification.strip())


def judge_checks(
    records: Sequence[NERRecord],
    drafts: Sequence[Draft],
    judge: Backend,
    settings: GenerationSettings,
    threshold: float,
) -> list[tuple[Check, dict | None]]:
    """One judge call for the list; per draft the check and the judgement (as a dict)."""
    prompts = [judge_messages(r, d) for r, d in zip(records, drafts, strict=True)]
    results = []
    for completion in judge.generate(prompts, settings):
        judgement = parse_judgement(completion.text)
        if judgement is None:
            reply = " ".join(completion.text.split())[:200]
            results.append((Check(JUDGED, False, f"unreadable judge reply: {reply!r}"), None))
            continue
        passed = judgement.score >= threshold
        detail = (
            f"coherence {judgement.coherence:g}, accuracy {judgement.accuracy:g} "
            f"(minimum {threshold:g}): {judgement.justification}"
        )
        results.append((Check(JUDGED, passed, detail), asdict(judgement)))
    return results
