"""Window planning for long documents: budgets, overlap, texts without spaces."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
import spacy

from spacy_reasoningner.sharding import plan_windows, sentence_ranges


def covered_whole(windows, start: int, end: int) -> bool:
    return any(w.start <= start and end <= w.end for w in windows)


def check_windows(text: str, windows, max_chars: int) -> None:
    assert windows[0].start == 0 and windows[-1].end == len(text)
    assert all(w.end - w.start <= max_chars for w in windows)
    assert all(b.start <= a.end for a, b in pairwise(windows))  # no gap


def test_chinese_without_spaces_is_cut_at_tokens_with_overlap():
    nlp = spacy.blank("zh")
    filler = "我们今天在这里讨论了很多关于历史和文化的问题以及未来的发展方向"
    text = (filler * 200)[:1998] + "北京大学" + (filler * 200)[:3000]  # across character 2000
    doc = nlp(text)
    windows = plan_windows(doc, max_chars=2000, text=text)
    check_windows(text, windows, 2000)
    start = text.index("北京大学")
    assert covered_whole(windows, start, start + 4)


@pytest.mark.parametrize("separator", ["\t", "\n", "\u3000"])
def test_words_separated_by_other_whitespace_are_cut_between_words(separator):
    nlp = spacy.blank("en")
    text = separator.join(f"entry{i}{separator}AdaLovelace" for i in range(600))
    doc = nlp(text)
    windows = plan_windows(doc, max_chars=1000, text=text)
    check_windows(text, windows, 1000)
    for window in windows[:-1]:
        assert text[window.end].isspace()  # never inside a word
    for match in re.finditer(r"\S+", text):
        assert covered_whole(windows, *match.span())


def test_one_giant_token_is_cut_at_the_budget():
    nlp = spacy.blank("en")
    text = "x" * 5000
    windows = plan_windows(nlp(text), max_chars=1000, text=text)
    check_windows(text, windows, 1000)


def test_a_large_sentence_overlap_is_capped_at_half_a_window():
    nlp = spacy.blank("en")
    text = " ".join(f"Sentence number {i} is here." for i in range(4000))  # ~105k chars
    doc = nlp(text)
    few = plan_windows(doc, max_chars=2000, overlap_sentences=1, text=text)
    many = plan_windows(doc, max_chars=2000, overlap_sentences=200, text=text)
    check_windows(text, many, 2000)
    assert len(few) <= len(many) <= 2 * len(few) + 1  # 200 sentences of overlap made 6,868


def test_sentence_ranges_cover_the_text_sentence_by_sentence():
    nlp = spacy.blank("en")
    text = "Ada came. Bob left. Eve stayed."
    expected = [(0, 10), (10, 20), (20, len(text))]
    assert sentence_ranges(nlp(text)) == expected  # no sentence annotation: the sentencizer
    nlp.add_pipe("sentencizer")
    assert sentence_ranges(nlp(text)) == expected  # the Doc's own sentences


def test_a_sentence_of_exactly_max_chars_is_one_window_and_one_char_more_is_cut():
    nlp = spacy.blank("en")
    long_sentence = "word " * 40  # 200 characters, one sentence
    text = f"Short one. {long_sentence.strip()}. End."
    doc = nlp(text)
    start = len("Short one. ")
    sentence = len(long_sentence.strip()) + len(". ")
    fits = plan_windows(doc, max_chars=sentence, overlap_sentences=0, text=text)
    cut = plan_windows(doc, max_chars=sentence - 1, overlap_sentences=0, text=text)
    assert (start, start + sentence) in [(w.start, w.end) for w in fits]
    assert all(w.end - w.start <= sentence - 1 for w in cut)
