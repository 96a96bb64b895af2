"""A view of what the model did: displaCy's entity markup next to the reasoning, the mentions
that could not be grounded and the scored candidates, as one self-contained HTML file (inline
styles, no scripts, nothing fetched).

    from spacy_reasoningner.view import save_html
    save_html(nlp.pipe(texts), "view.html", component=nlp.get_pipe("reasoning_ner"))
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spacy import displacy
from spacy.tokens import Doc

# Distinct, light colours for the labels in order of first appearance (dark text stays readable).
PALETTE = (
    "#7aecec", "#feca74", "#bfeeb7", "#aa9cfc", "#ff9561", "#c887fb",
    "#9cc9cc", "#e4e7d2", "#ffeb80", "#f0b3c7", "#b5d5ff", "#d6c3a5",
)  # fmt: skip
DEFAULT_EXTENSIONS = {
    "reasoning": "ner_reasoning",
    "unaligned": "ner_unaligned",
    "usage": "ner_usage",
}

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem;
       color: #1f2328; max-width: 70rem; }
h1 { font-size: 1.4rem; }
section.doc { border-top: 1px solid #d0d7de; padding: 1rem 0; }
.columns { display: flex; gap: 2rem; flex-wrap: wrap; }
.columns > div { flex: 1 1 28rem; min-width: 20rem; }
h2 { font-size: 1rem; margin: 0.5rem 0; color: #57606a; }
pre.reasoning { background: #eef3fb; border-left: 4px solid #4a78c2; padding: 0.8rem;
                white-space: pre-wrap; font-size: 0.85rem; line-height: 1.4; }
table { border-collapse: collapse; font-size: 0.85rem; }
td, th { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left; }
p.usage, p.none { color: #57606a; font-size: 0.8rem; }
"""


def label_colors(docs: Iterable[Doc], spans_key: str | None = None) -> dict[str, str]:
    """A colour per label, in order of first appearance over ``docs``."""
    colors: dict[str, str] = {}
    for doc in docs:
        spans = list(doc.ents) + list(doc.spans.get(spans_key, []) if spans_key else [])
        for span in spans:
            if span.label_ not in colors:
                colors[span.label_] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def render_html(
    docs: Iterable[Doc],
    *,
    component: Any = None,
    title: str = "reasoning_ner",
) -> str:
    """One HTML page: per Doc its entities (displaCy), reasoning, unaligned mentions, scored
    candidates (``doc.spans[spans_key]``, when the component keeps them) and usage.
    ``component`` supplies the extension names and ``spans_key`` (defaults otherwise)."""
    docs = list(docs)
    names: Mapping[str, str] = getattr(component, "ext", None) or DEFAULT_EXTENSIONS
    settings = getattr(component, "settings", None)
    spans_key = getattr(settings, "spans_key", None)
    colors = label_colors(docs, spans_key)
    sections = [
        _render_doc(i, doc, names, spans_key, colors) for i, doc in enumerate(docs, start=1)
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}: {len(docs)} document{'s' * (len(docs) != 1)}</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )


def save_html(docs: Iterable[Doc], path: str | Path, **options: Any) -> Path:
    """Write ``render_html(docs, **options)`` to ``path``."""
    path = Path(path)
    path.write_text(render_html(docs, **options), encoding="utf-8")
    return path


def _render_doc(
    number: int,
    doc: Doc,
    names: Mapping[str, str],
    spans_key: str | None,
    colors: dict[str, str],
) -> str:
    with warnings.catch_warnings():  # a Doc without entities is shown as plain text
        warnings.filterwarnings("ignore", message=r"\[W006\]")
        entities = displacy.render(
            doc, style="ent", page=False, minify=True, options={"colors": colors}
        )
    reasoning = _extension(doc, names.get("reasoning")) or ""
    unaligned = _extension(doc, names.get("unaligned")) or []
    usage = _extension(doc, names.get("usage"))
    parts = [
        f"<section class='doc' id='doc-{number}'><h2>Document {number}</h2>",
        "<div class='columns'><div>",
        f"<h2>Entities ({len(doc.ents)})</h2>{entities}",
        _scored(doc, spans_key),
        _unaligned_table(unaligned, len(doc.ents)),
        "</div><div><h2>Reasoning</h2>",
        f"<pre class='reasoning'>{html.escape(reasoning)}</pre>"
        if reasoning
        else "<p class='none'>no reasoning</p>",
        _usage_line(usage),
        "</div></div></section>",
    ]
    return "".join(parts)


def _extension(doc: Doc, name: str | None) -> Any:
    return doc._.get(name) if name and Doc.has_extension(name) else None


def _unaligned_table(unaligned: list[dict[str, str]], entities: int) -> str:
    if not unaligned:
        said = "every mention was found in the text" if entities else "the model named nothing"
        return f"<h2>Not grounded</h2><p class='none'>{said}</p>"
    rows = "".join(
        f"<tr><td>{html.escape(u['text'])}</td><td>{html.escape(u['label'])}</td>"
        f"<td>{html.escape(u['reason'])}</td></tr>"
        for u in unaligned
    )
    return (
        f"<h2>Not grounded ({len(unaligned)})</h2><table class='unaligned'>"
        f"<tr><th>mention</th><th>label</th><th>why</th></tr>{rows}</table>"
    )


def _scored(doc: Doc, spans_key: str | None) -> str:
    if not spans_key or spans_key not in doc.spans:
        return ""
    group = doc.spans[spans_key]
    scores = group.attrs.get("scores")
    if scores is None:
        return ""
    if not len(group):
        return "<h2>Candidates with scores</h2><p class='none'>none</p>"
    rows = "".join(
        f"<tr><td>{html.escape(s.text)}</td><td>{html.escape(s.label_)}</td>"
        f"<td>{score:.2f}</td></tr>"
        for s, score in zip(group, scores, strict=True)
    )
    return (
        f"<h2>Candidates with scores ({len(group)})</h2><table class='scores'>"
        f"<tr><th>span</th><th>label</th><th>score</th></tr>{rows}</table>"
    )


def _usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    windows = usage["windows"]
    completions = sum(w["completions"] for w in windows)
    if usage["prompt_tokens"] is None or usage["completion_tokens"] is None:
        tokens = "tokens not counted by this backend"
    else:  # the totals of every completion: with samples = k, of k per window
        tokens = f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens"
    counted = f"{len(windows)} window(s), {completions} completion(s): {tokens}"
    return (
        f"<p class='usage'>{html.escape(counted)}, {usage['seconds']:.2f} s, "
        f"{html.escape(str(usage['backend']))}</p>"
    )
