"""The protocol: prompt structure, robust parsing of model output, normalization, string F1."""

from __future__ import annotations

import json
import re

import pytest

from spacy_reasoningner.protocol import (
    ISSUE_BAD_SHAPE,
    ISSUE_EMPTY,
    ISSUE_NO_ENTITIES_KEY,
    ISSUE_NO_JSON,
    ISSUE_NON_STRING,
    ISSUE_OUT_OF_SCHEMA,
    ISSUE_PROSE,
    ISSUE_REPAIRED,
    ISSUE_TRUNCATED,
    ISSUE_UNCLOSED_THINK,
    MIN_LOOP_LINE_CHARS,
    PRF,
    FewShotExample,
    Schema,
    mention_list_repeats,
    normalize_mention,
    open_think_block,
    parse_completion,
    reasoned_label,
    reasoning_loop_start,
    reasoning_text,
    render_answer,
    render_completion,
    render_messages,
    render_prompt,
    string_prf,
)

from ._timing import best_cpu_seconds, grows_linearly

SCHEMA = Schema.from_config(["Person", "location", "organisation"])


# --------------------------------------------------------------------------- schema


def test_schema_is_lowercased_and_sorted_for_the_prompt():
    assert SCHEMA.prompt_names == ("location", "organisation", "person")
    assert SCHEMA.labels == ("Person", "location", "organisation")


def test_schema_keeps_case_when_asked():
    schema = Schema.from_config(["PER", "LOC"], lowercase=False)
    assert schema.prompt_names == ("PER", "LOC")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "labels is empty"),
        ("person", "must be a list of names or a mapping"),
        (["person", 3], "is not a non-empty string"),
        (["person", "  "], "is not a non-empty string"),
        (["person", "Person"], "are duplicates"),
        (["music genre", "music_genre"], "are duplicates"),
        ({"person": 1}, "definition of label 'person' must be a string"),
    ],
)
def test_bad_labels_get_a_message_that_says_what_to_fix(labels, message):
    with pytest.raises(ValueError, match=message):
        Schema.from_config(labels)


def test_canonical_label_ignores_case_spaces_and_underscores():
    schema = Schema.from_config(["music_genre", "PERSON"])
    assert schema.canonical("Music Genre") == "music_genre"
    assert schema.canonical(" person ") == "PERSON"
    assert schema.canonical("organization") is None


# --------------------------------------------------------------------------- rendering


def test_prompt_follows_the_paper_structure():
    (turn,) = render_messages("Ada lived in London.", SCHEMA)
    assert turn["role"] == "user"
    lines = turn["content"].split("\n")
    assert lines[0].startswith("Extract the named entities")
    assert "schema lists the entity types" in turn["content"]
    assert "Only extract entities whose type is in the schema" in turn["content"]
    assert 'Schema: ["location", "organisation", "person"]' in lines
    assert any(line.startswith('Output format: {"entities"') for line in lines)
    assert lines[-1] == "Text: Ada lived in London."
    assert "<think>" in turn["content"]


def test_direct_answer_prompt_asks_for_json_only():
    (turn,) = render_messages("x", SCHEMA, reasoning=False)
    assert "Answer with the JSON only." in turn["content"]
    assert "<think>" not in turn["content"]


def test_definitions_are_rendered_under_prompt_names():
    schema = Schema.from_config({"Person": "a human being", "location": "a place"})
    content = render_messages("x", schema)[0]["content"]
    assert "Type definitions:\n- person: a human being\n- location: a place" in content


def test_render_prompt_uses_the_tokenizer_chat_template_or_chatml(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = render_messages("Ada", SCHEMA)
    rendered = render_prompt(tokenizer, messages)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert messages[0]["content"] in rendered
    tokenizer.chat_template = None
    chatml = render_prompt(tokenizer, messages)
    assert (
        chatml == f"<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_rendered_answer_lists_labels_in_schema_order():
    """The order constrained decoding enforces (xgrammar keeps a JSON Schema's property order;
    grounded grammars do too), whatever order the entities come in."""
    schema = Schema.from_config(["person", "organization", "location"])
    answer = render_answer(
        {"person": ["Ada"], "location": ["London"], "organization": ["IBM"]}, schema
    )
    assert list(json.loads(answer)["entities"]) == list(schema.prompt_names)
    assert list(schema.prompt_names) == ["location", "organization", "person"]


def test_rendered_answer_round_trips_through_the_parser():
    answer = render_answer({"Person": ["Ada", "Ada", "Bob"], "location": []}, SCHEMA)
    assert json.loads(answer) == {"entities": {"person": ["Ada", "Bob"]}}
    parsed = parse_completion(render_completion("Ada is a person.", answer), SCHEMA)
    assert parsed.valid
    assert parsed.reasoning == "Ada is a person."
    assert parsed.entities == {"Person": ["Ada", "Bob"]}


# --------------------------------------------------------------------------- parsing


def parse(text: str, **kwargs):
    return parse_completion(text, SCHEMA, **kwargs)


def test_well_formed_completion_is_valid():
    parsed = parse(
        '<think>Ada is a person.</think>\n{"entities": {"person": ["Ada"], "location": ["London"]}}'
    )
    assert parsed.valid and parsed.parsed
    assert parsed.reasoning == "Ada is a person."
    assert parsed.entities == {"Person": ["Ada"], "location": ["London"]}
    assert parsed.mentions() == [("Ada", "Person"), ("London", "location")]


def test_empty_answer_object_is_valid_and_empty():
    parsed = parse('<think>nothing here</think>{"entities": {}}')
    assert parsed.valid and parsed.entities == {}


def test_no_think_block():
    parsed = parse('{"entities": {"person": ["Ada"]}}')
    assert parsed.valid and parsed.reasoning == ""
    assert parsed.entities == {"Person": ["Ada"]}


def test_closing_tag_without_opening_one():
    # Templates such as Qwen3's open the think block in the prompt.
    parsed = parse('Ada is a name.\n</think>\n\n{"entities": {"person": ["Ada"]}}')
    assert parsed.valid and parsed.reasoning == "Ada is a name."


def test_unclosed_think_gives_no_entities_but_keeps_reasoning():
    parsed = parse('<think>Ada could be {"entities": {"person": ["Ada"]}} and then')
    assert parsed.entities == {}
    assert ISSUE_UNCLOSED_THINK in parsed.issues and not parsed.parsed
    assert parsed.reasoning.startswith("Ada could be")


def test_fenced_json():
    parsed = parse('<think>ok</think>\n```json\n{"entities": {"person": ["Ada"]}}\n```')
    assert parsed.entities == {"Person": ["Ada"]} and parsed.valid


def test_answer_tags():
    parsed = parse('<think>ok</think><answer>{"entities": {"location": ["Paris"]}}</answer>')
    assert parsed.entities == {"location": ["Paris"]} and parsed.valid


def test_the_object_in_answer_tags_wins_over_an_earlier_one():
    # A model that quotes an example answer in its prose before tagging the real one.
    text = 'An answer looks like {"entities": {"person": ["Bob"]}}.\n<answer>{"entities": {"location": ["Paris"]}}</answer>'
    assert parse(text).entities == {"location": ["Paris"]}
    unclosed = (
        'Like {"entities": {"person": ["Bob"]}}. <answer>{"entities": {"location": ["Paris"]}}'
    )
    assert parse(unclosed).entities == {"location": ["Paris"]}  # cut before </answer>


def test_prose_before_and_after_the_json():
    parsed = parse('Sure! Here it is: {"entities": {"person": ["Ada"]}} Hope this helps.')
    assert parsed.entities == {"Person": ["Ada"]}
    assert ISSUE_PROSE in parsed.issues and not parsed.valid
    assert parsed.reasoning == "Sure! Here it is:"


def test_prose_around_a_fence():
    parsed = parse('Here:\n```json\n{"entities": {"person": ["Ada"]}}\n```\nDone.')
    assert parsed.entities == {"Person": ["Ada"]} and ISSUE_PROSE in parsed.issues


def test_the_object_with_entities_wins_over_earlier_objects():
    parsed = parse('Format: {"a": 1}. Answer: {"entities": {"person": ["Ada"]}}')
    assert parsed.entities == {"Person": ["Ada"]}


def test_single_quotes():
    parsed = parse("{'entities': {'person': ['Ada', \"O'Neil\"]}}")
    assert parsed.entities == {"Person": ["Ada", "O'Neil"]}
    assert ISSUE_REPAIRED in parsed.issues


def test_trailing_commas():
    parsed = parse('{"entities": {"person": ["Ada", "Bob",], "location": ["Rome"],},}')
    assert parsed.entities == {"Person": ["Ada", "Bob"], "location": ["Rome"]}
    assert ISSUE_REPAIRED in parsed.issues


def test_python_literals_and_bare_keys():
    parsed = parse('{entities: {"person": ["Ada", None, True]}}')
    assert parsed.entities == {"Person": ["Ada"]}
    assert ISSUE_NON_STRING in parsed.issues


def test_labels_outside_the_schema_are_kept_apart():
    parsed = parse('{"entities": {"person": ["Ada"], "date": ["1815"], "Location": ["London"]}}')
    assert parsed.entities == {"Person": ["Ada"], "location": ["London"]}
    assert parsed.out_of_schema == [("date", "1815")]
    assert ISSUE_OUT_OF_SCHEMA in parsed.issues and not parsed.valid


def test_non_string_items():
    parsed = parse('{"entities": {"person": ["Ada", ["Bob"], {"name": "Cy"}, 1815, ""]}}')
    assert parsed.entities == {"Person": ["Ada", "1815"]}
    assert ISSUE_NON_STRING in parsed.issues


def test_a_single_string_instead_of_a_list():
    parsed = parse('{"entities": {"person": "Ada"}}')
    assert parsed.entities == {"Person": ["Ada"]} and ISSUE_BAD_SHAPE in parsed.issues


def test_list_of_objects_shape():
    parsed = parse(
        '{"entities": [{"text": "Ada", "label": "person"}, {"text": "Rome", "type": "location"}]}'
    )
    assert parsed.entities == {"Person": ["Ada"], "location": ["Rome"]}
    assert ISSUE_BAD_SHAPE in parsed.issues


def test_missing_entities_key():
    parsed = parse('{"person": ["Ada"]}')
    assert parsed.entities == {"Person": ["Ada"]} and ISSUE_NO_ENTITIES_KEY in parsed.issues


def test_duplicates_collapse_in_order():
    parsed = parse('{"entities": {"person": ["Bob", "Ada", "Bob", " Ada "]}}')
    assert parsed.entities == {"Person": ["Bob", "Ada"]}


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_output(text):
    parsed = parse(text)
    assert parsed.entities == {} and parsed.issues == [ISSUE_EMPTY]


def test_no_json_at_all():
    parsed = parse("<think>hmm</think> I do not know.")
    assert parsed.entities == {} and ISSUE_NO_JSON in parsed.issues


def test_answer_that_is_not_an_object():
    assert parse('["Ada"]').entities == {}
    assert parse('"Ada"').entities == {}


def test_truncated_output_keeps_complete_items():
    parsed = parse('<think>x</think>{"entities": {"person": ["Ada", "Bob"], "location": ["Lon')
    assert parsed.entities == {"Person": ["Ada", "Bob"]}
    assert ISSUE_TRUNCATED in parsed.issues


def test_truncated_right_after_a_key():
    parsed = parse('{"entities": {"person": ["Ada"], "location":')
    assert parsed.entities == {"Person": ["Ada"]}


def test_echoed_template_garbage_does_not_crash():
    garbage = (
        '{"entities":[{"<type>":[{"<mention">", "</mention>}, "</mention>},{"<type>":[{"<mention'
    )
    assert parse(garbage).entities == {}


def test_reasoning_from_a_separate_field():
    parsed = parse('{"entities": {"person": ["Ada"]}}', reasoning="Ada is a woman's name.")
    assert parsed.reasoning == "Ada is a woman's name." and parsed.valid


def test_unicode_escapes():
    parsed = parse("{'entities': {'person': ['Zo\\u00eb']}}")
    assert parsed.entities == {"Person": ["Zoë"]}


# --------------------------------------------------------------------------- metric


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Beatles", "beatles"),
        ("U.S.", "us"),
        ("  New   York ", "new york"),
        ("an apple a day", "apple day"),
        ("Théâtre", "théâtre"),
        ("Anne", "anne"),  # articles only as whole words
    ],
)
def test_normalize_mention(raw, normalized):
    assert normalize_mention(raw) == normalized


def test_string_prf_uses_sets_of_normalized_pairs():
    gold = [("The Beatles", "band"), ("Liverpool", "location")]
    predicted = [("Beatles", "Band"), ("beatles", "band"), ("London", "location")]
    counts = string_prf(predicted, gold)
    assert (counts.tp, counts.n_pred, counts.n_gold) == (1, 2, 2)
    assert counts.f1 == pytest.approx(0.5)


def test_micro_counts_add_up_over_sentences():
    total = string_prf([("a b", "x")], [("a b", "x")]) + string_prf([], [("c", "x")])
    assert (total.precision, total.recall) == (1.0, 0.5)
    assert total.f1 == pytest.approx(2 / 3)
    assert PRF().f1 == 0.0


def test_answer_json_schema_allows_only_schema_labels():
    from spacy_reasoningner.protocol import answer_json_schema

    json_schema = answer_json_schema(SCHEMA)
    entities = json_schema["properties"]["entities"]
    assert sorted(entities["properties"]) == ["location", "organisation", "person"]
    assert entities["additionalProperties"] is False and json_schema["required"] == ["entities"]
    item = {"type": "string", "minLength": 1, "maxLength": 100}
    assert entities["properties"]["person"] == {"type": "array", "items": item, "maxItems": 32}


# --------------------------------------------------------------------------- hostile output


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ('{"entities": {"person": ' + "[" * 500, {}),  # the reader used to recurse per bracket
        ('{"entities": {"person": ["Ada", ' + "[" * 5000 + "]" * 5000 + "]}}", {"Person": ["Ada"]}),
        ('{"entities": {"person": [' + "1" * 5000 + "]}}", {}),  # int() refuses 4300+ digits
        ('{"entities": {"person": [' + "1" * 310 + "]}}", {"Person": ["1" * 310]}),  # > float
        ('{"entities": {"person": [1e999, NaN]}}', {}),
    ],
)
def test_deep_nesting_and_huge_numbers_never_raise(text, entities):
    parsed = parse(text)
    assert parsed.entities == entities
    assert ISSUE_NON_STRING in parsed.issues or ISSUE_TRUNCATED in parsed.issues


@pytest.mark.parametrize("unit", ["{", "[", '{"a":[', '{"entities":1 ', '{"', "{'a':1}", "```"])
def test_parse_time_grows_linearly(unit):
    # Linear: about 16x the time for 16x the text; the quadratic reader took 250x.
    assert grows_linearly(lambda size: parse(unit * (size // len(unit))), 8_000, 128_000)


def test_a_megabyte_of_braces_parses_in_well_under_a_second():
    assert best_cpu_seconds(lambda: parse("{" * 1_000_000), repeats=1) < 0.5


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ('{"entities": {"person": ["Ada"]}}\nUse ```json next time.', {"Person": ["Ada"]}),
        ('{"entities": {"person": ["Ada"]}} <answer> is the tag', {"Person": ["Ada"]}),
        ('<think>x</think>{"entities": {"person": ["a</think>b"]}}', {"Person": ["a</think>b"]}),
        ('{"entities": {"person": ["<think>x", "Ada"]}}', {"Person": ["<think>x", "Ada"]}),
        ('```json\n{"entities": {"person": ["a```b", "Ada"]}}\n```', {"Person": ["a```b", "Ada"]}),
        ('<answer>{"entities": {"person": ["a</answer>b"]}}</answer>', {"Person": ["a</answer>b"]}),
    ],
)
def test_tags_and_fences_never_cut_the_answer_that_is_there(text, entities):
    assert parse(text).entities == entities


def test_a_think_tag_inside_a_mention_keeps_the_reasoning_apart():
    parsed = parse('<think>Ada is named.</think>{"entities": {"person": ["a</think>b"]}}')
    assert parsed.reasoning == "Ada is named." and parsed.valid


def test_a_draft_inside_the_reasoning_is_not_the_answer():
    parsed = parse('<think>maybe {"entities": {"person": ["Bob"]}}</think> no answer')
    assert parsed.entities == {} and ISSUE_NO_JSON in parsed.issues
    # Nor one that ends right at the close tag of a block the prompt opened: the tag
    # follows the object, it is not inside a mention of it.
    parsed = parse('maybe {"entities": {"person": ["Bob"]}}</think> no answer')
    assert parsed.entities == {} and ISSUE_NO_JSON in parsed.issues


def test_an_answer_tag_wins_over_an_echoed_format():
    parsed = parse(
        'Format: {"entities": {"<type>": ["<mention>"]}}\n'
        '<answer>{"entities": {"person": ["Ada"]}}</answer>'
    )
    assert parsed.entities == {"Person": ["Ada"]} and parsed.out_of_schema == []


def test_items_that_are_not_mentions_are_reported():
    parsed = parse('{"entities": {"person": [["Ada Lovelace"], {"text": "Bob"}, true, null]}}')
    assert parsed.entities == {}
    assert parsed.rejected == [
        ("Person", '["Ada Lovelace"]', "not a string mention"),
        ("Person", '{"text": "Bob"}', "not a string mention"),
        ("Person", "true", "not a string mention"),
    ]
    listed = parse('{"entities": [{"text": "Ada"}, "Bob"]}')
    assert [(label, reason) for label, _, reason in listed.rejected] == [
        ("", "no label given"),
        ("", "no label given"),
    ]


def test_escapes_and_surrogates_read_as_json_does():
    strict = parse(r'{"entities": {"person": ["\ud83d\ude00 Zo\u00eb", "a\/b\tc"]}}')
    lenient = parse(r"{'entities': {'person': ['\ud83d\ude00 Zo\u00eb', 'a\/b\tc']}}")
    assert strict.entities == lenient.entities == {"Person": ["😀 Zoë", "a/b\tc"]}
    lone = parse(r'{"entities": {"person": ["\ud800x"]}}')
    assert lone.entities == {"Person": ["\ufffdx"]}  # writable as UTF-8


def test_repairs_are_flagged_only_when_made():
    assert parse('{"entities": {"person": ["Ada"]}} trailing {').issues == [ISSUE_PROSE]
    assert ISSUE_REPAIRED in parse('{"entities": {"person": ["A\nda"]}}').issues


def test_json_objects_reads_any_model_output_safely():
    from spacy_reasoningner.protocol import json_objects

    text = 'Scores: {"coherence": 9} and {accuracy: 8,} then ' + "{" * 50_000 + "[" * 5000
    assert list(json_objects(text))[:2] == [{"coherence": 9}, {"accuracy": 8}]
    assert grows_linearly(lambda size: list(json_objects('{"a": [' * size)), 2_000, 32_000)


LOOPING = (
    '"Caldicott" is a person.\n"In 1990" is a person.\n'
    '"Caldicott" is a person.\n"In 1990" is a person.\n"Caldicott" is a person.'
)


def test_a_reasoning_loop_starts_at_the_first_repeated_line():
    assert LOOPING[reasoning_loop_start(LOOPING) :].startswith('"Caldicott" is a person.\n"In')
    assert reasoning_loop_start(LOOPING) == len(
        '"Caldicott" is a person.\n"In 1990" is a person.\n'
    )
    # Short lines repeat in honest reasoning ("Wait.", blank lines); they are not a loop.
    assert reasoning_loop_start("Wait.\nAda is a person.\nWait.\n\n\nBob is a person.") is None
    assert reasoning_loop_start("  Ada is a person.\nAda is a person.  ") == len(
        "  Ada is a person.\n"
    )
    # A line of exactly MIN_LOOP_LINE_CHARS characters counts; one shorter does not.
    line = "x" * MIN_LOOP_LINE_CHARS
    assert reasoning_loop_start(f"{line}\n{line}\n") == len(line) + 1
    assert reasoning_loop_start(f"{line[1:]}\n{line[1:]}\n") is None


def test_a_mention_list_repeats_when_it_goes_on_after_a_mention_it_holds():
    head = '{"entities": {"person": ["Ada", "Bob"], "location": ["Ada", '
    assert not mention_list_repeats(head)  # another list may name "Ada" again
    assert not mention_list_repeats(head + '"Paris", "Ada"]}}')  # a repeat that ends the list
    assert mention_list_repeats(head + '"Paris", "Ada",')
    # Structure inside mentions is text: escaped quotes, brackets and commas.
    quoted = '{"entities": {"work": ["\\"Dune, Part 2\\" [film]", "\\"Dune, Part 2\\" [film]"'
    assert not mention_list_repeats(quoted) and mention_list_repeats(quoted + ", ")
    assert not mention_list_repeats('{"entities": {"work": ["A", "B", "A, B",')
    # Strings after a closed list are not mentions of it: only an open list can repeat.
    assert not mention_list_repeats('{"entities": {"work": ["X"], "note": "X", ')


def test_the_answer_pass_continues_from_the_reasoning_before_its_loop():
    assert reasoning_text(f"<think>\n{LOOPING}", stop_loops=True) == (
        '"Caldicott" is a person.\n"In 1990" is a person.'
    )
    assert reasoning_text(LOOPING + "</think>", stop_loops=False) == LOOPING.strip()
    assert reasoning_text("", stop_loops=True) == ""


def test_the_reasoning_pass_starts_inside_an_opened_think_block():
    """Opened once, whether the chat template left it to the model or opened it itself."""
    chatml = "<|im_start|>assistant\n"
    assert open_think_block(chatml) == chatml + "<think>\n"
    assert open_think_block(chatml + "<think>") == chatml + "<think>\n"
    assert open_think_block(chatml + "<think>\n") == chatml + "<think>\n"


def test_the_label_the_reasoning_gives_a_mention():
    reasoning = (
        "Apple makes phones.\n"  # no label on this line: the next occurrence decides
        '"Apple Inc." is an organization, not a person.\n'
        '"Steve Jobs" is a person with a personal computer.\n'
        '"Ella" is a musical artist.'
    )
    labels = ["person", "organization", "musical artist", "artist"]
    assert reasoned_label(reasoning, "apple inc.", labels) == "organization"
    assert reasoned_label(reasoning, "Steve Jobs", labels) == "person"
    assert reasoned_label(reasoning, "Ella", labels) == "musical artist"  # the longer name
    assert reasoned_label(reasoning, "Apple", ["person"]) == "person"  # line 2, after "Apple"
    assert reasoned_label(reasoning, "Wozniak", labels) is None
    assert reasoned_label(reasoning, "", labels) is None
    assert reasoned_label("Ada is personal.", "Ada", ["person"]) is None  # whole words only
    # A name that begins another: the longer one, where the line names it.
    assert reasoned_label('"Ella" is a musical artist.', "Ella", ["musical", "musical artist"]) == (
        "musical artist"
    )
    # The first occurrence that names a label decides, not a later one.
    later = '"Paris" is a location.\n"Paris Hilton" is a person.'
    assert reasoned_label(later, "Paris", ["person", "location"]) == "location"
    # Only the rest of the mention's own line counts, and the occurrences are read in order.
    assert reasoned_label('"Ada" came.\nBob is a person.\nEnd.', "Ada", ["person"]) is None
    thrice = '"Ada" came.\n"Ada" is a person.\n"Ada" is a location.'
    assert reasoned_label(thrice, "Ada", ["person", "location"]) == "person"


SHAPE = re.escape(
    '{"text": "...", "entities": {"<label>": ["<mention>", ...]}, "reasoning": "..."}'
)


@pytest.mark.parametrize(
    "value, message",
    [
        ("Ada.", rf"^example 1 must be an object {SHAPE}, got str$"),
        ({"entities": {}}, rf"^example 1 needs a non-empty text: {SHAPE}$"),
        ({"text": "  ", "entities": {}}, rf"^example 1 needs a non-empty text: {SHAPE}$"),
        ({"text": "Ada.", "entities": []}, rf"^example 1 needs entities as an object label -> mentions: {SHAPE}$"),
        ({"text": "Ada.", "entities": {}, "reasoning": 5}, r"^example 1: reasoning must be text$"),
        ({"text": "Ada.", "entities": {"person": "Ada"}}, r"^example 1: the mentions of 'person' must be a list of strings$"),
    ],
)  # fmt: skip
def test_a_malformed_few_shot_example_is_named_with_the_shape_it_needs(value, message):
    with pytest.raises(ValueError, match=message):
        FewShotExample.from_config(value, SCHEMA)


def test_a_few_shot_example_is_named_by_its_number():
    with pytest.raises(ValueError, match=r"^example 3 must be an object"):
        FewShotExample.from_config([], SCHEMA, number=3)


def test_the_answer_lists_labels_in_the_schema_order_and_unknown_ones_last():
    entities = {"aardvark": ["x"], "organisation": ["ACME"], "Person": ["Zoë", "Zoë"]}
    assert render_answer(entities, SCHEMA) == (
        '{"entities": {"organisation": ["ACME"], "person": ["Zoë"], "aardvark": ["x"]}}'
    )


def test_an_unknown_escape_is_repaired_and_a_known_one_is_not_a_repair():
    unknown = parse('{"entities": {"person": ["A\\qda"]}}')
    assert unknown.entities == {"Person": ["Aqda"]} and ISSUE_REPAIRED in unknown.issues
    known = parse('{"entities": {"person": ["A\\tda", "Bo')  # cut: read by the lenient reader
    assert known.entities == {"Person": ["A\tda"]} and ISSUE_TRUNCATED in known.issues
    assert ISSUE_REPAIRED not in known.issues
