"""Quality control of reasoning samples; every decision is kept with its reason.

Cheap checks run first on every draft (structure, gold agreement); the judge, a model call,
only sees drafts that passed them. A sample is kept when every check it went through passed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from spacy_reasoningner.alignment import find_word_occurrences
from spacy_reasoningner.backends.base import (
    AnswerShape,
    Backend,
    Completion,
    GenerationSettings,
    Request,
    generate,
)
from spacy_reasoningner.benchmark.readers import NERRecord
from spacy_reasoningner.protocol import (
    ChatMessages,
    json_objects,
    normalize_mention,
    split_reasoning,
    string_prf,
)

from .samples import gold_entities, record_task
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


# The verdict's shape, for judges that constrain their answers (backend ``structured_output``;
# the GPU profiles' judge answers freely and is read by ``parse_judgement``).
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "coherence": {"type": "number", "minimum": 0, "maximum": 10},
        "accuracy": {"type": "number", "minimum": 0, "maximum": 10},
        "justification": {"type": "string", "maxLength": 300},
    },
    "required": ["coherence", "accuracy", "justification"],
    "additionalProperties": False,
}


VERDICT = AnswerShape(VERDICT_SCHEMA)


def verdict_requests(prompts: Sequence[ChatMessages]) -> list[Request]:
    """The judge's requests about ``prompts``: each verdict to the verdict schema."""
    return [Request(p, answer=VERDICT) for p in prompts]


@dataclass
class Judgement:
    coherence: float
    accuracy: float
    justification: str

    @property
    def score(self) -> float:
        return min(self.coherence, self.accuracy)


def judge_messages(record: NERRecord, draft: Draft) -> ChatMessages:
    task = record_task(record)
    content = _JUDGE.format(
        text=record.text,
        schema=task.schema.schema_json,
        reasoning=draft.reasoning,
        answer=task.target(draft.entities),
    )
    return [{"role": "user", "content": content}]


_SCORE = re.compile(r'"?(coherence|accuracy)"?\s*[:=]\s*"?(\d+(?:\.\d+)?)', re.IGNORECASE)


def parse_judgement(text: str) -> Judgement | None:
    """The judge's scores from its reply (a JSON object, or failing that ``key: number``
    pairs anywhere in it); None when either score is missing or outside 0-10."""
    scores: dict[str, float] = {}
    justification = ""
    for value in json_objects(text):  # linear and never raising, whatever the judge wrote
        if {"coherence", "accuracy"} <= set(value):
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


# Tokens of a verdict asked for without thinking: the JSON object and its one-sentence
# justification take about 60.
VERDICT_MAX_TOKENS = 256


def without_thinking(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` with the chat template's thinking switch off (Qwen3's ``enable_thinking``,
    which vLLM's server and the local backends pass to the template)."""
    template = {**settings.chat_template_kwargs, "enable_thinking": False}
    return replace(settings, chat_template_kwargs=template)


def judge_checks(
    records: Sequence[NERRecord],
    drafts: Sequence[Draft],
    judge: Backend,
    settings: GenerationSettings,
    threshold: float,
    *,
    thinking: bool = True,
) -> list[tuple[Check, dict | None]]:
    """One judge call for the list; per draft the check and the judgement (as a dict).

    ``thinking`` False asks for the verdict with the judge's thinking off. With it on, a
    reply that the token budget cut before any verdict (a reasoning judge that thought too
    long) is asked again once, thinking off and at most ``VERDICT_MAX_TOKENS`` tokens, so the
    budget bounds the thinking and the verdict is still read."""
    prompts = [judge_messages(r, d) for r, d in zip(records, drafts, strict=True)]
    first = settings if thinking else without_thinking(settings)
    completions = generate(judge, verdict_requests(prompts), first, reasoning=thinking)
    judgements = [_verdict(c) for c in completions]
    cut = [i for i, c in enumerate(completions) if judgements[i] is None and c.truncated]
    asked_again: set[int] = set()
    if thinking and cut:
        short = replace(
            without_thinking(settings),
            max_new_tokens=min(settings.max_new_tokens, VERDICT_MAX_TOKENS),
        )
        for i, completion in zip(
            cut,
            generate(judge, verdict_requests([prompts[i] for i in cut]), short, reasoning=False),
            strict=True,
        ):
            completions[i], judgements[i] = completion, _verdict(completion)
            asked_again.add(i)
    results = []
    for i, (completion, judgement) in enumerate(zip(completions, judgements, strict=True)):
        if judgement is None:
            detail = _unreadable(completion, thinking=thinking and i not in asked_again)
            results.append((Check(JUDGED, False, detail), None))
            continue
        passed = judgement.score >= threshold
        detail = (
            f"coherence {judgement.coherence:g}, accuracy {judgement.accuracy:g} "
            f"(minimum {threshold:g}): {judgement.justification}"
        )
        if i in asked_again:
            detail += " [asked again without thinking: the reasoning reached max_new_tokens]"
        results.append((Check(JUDGED, passed, detail), asdict(judgement)))
    return results


def _verdict(completion: Completion) -> Judgement | None:
    """The judgement after the judge's think block: scores it mentions while thinking (or in
    a block the budget left open) are no verdict."""
    _, answer, _ = split_reasoning(completion.text)
    return parse_judgement(answer)


def _unreadable(completion: Completion, *, thinking: bool) -> str:
    """Why a judge reply gives no verdict, and what to change when the budget cut it."""
    reply = " ".join((completion.text or completion.reasoning or "").split())[:200]
    if not completion.truncated:
        return f"unreadable judge reply: {reply!r}"
    fix = "set [cg.quality] judge_thinking = false or " if thinking else ""
    return (
        f"unreadable judge reply, cut by the token budget before a verdict: {reply!r}; "
        f"{fix}raise [cg.judge_generation] max_new_tokens"
    )
