"""Property tests: the loader never fails but with a DataError, whatever the bytes or objects, and the
rule graders never fail and ignore case and surrounding space. Derandomized, so CI sees what we saw."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slearn_mlx.data import DataError, Record, load_records, parse_record
from slearn_mlx.grade import auto_grade

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=8)
FIELDS = st.sampled_from(["question", "answer", "aliases", "choices", "kind", "instruction", "input", "output",
                          "messages", "prompt", "completion", "system", "id"])


@settings(derandomize=True)
@given(st.dictionaries(FIELDS, JSON_VALUES, max_size=6) | JSON_VALUES)
def test_parse_record_accepts_or_names_the_problem(obj):
    try:
        record = parse_record(obj, "f.jsonl:1")
    except DataError as e:
        assert str(e).startswith("f.jsonl:1: ")
    else:
        assert record.question and record.answer and len(record.id) == 16


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50, derandomize=True)
@given(st.binary(max_size=300))
def test_any_bytes_load_or_give_a_data_error(tmp_path, content):
    path = tmp_path / "any.jsonl"
    path.write_bytes(content)
    try:
        records = load_records(path)
    except DataError as e:
        assert str(e).startswith(str(path))
    else:
        assert records


@settings(derandomize=True)
@given(st.text(min_size=1), st.text(min_size=1))
def test_ids_are_stable_and_strip_surrounding_whitespace(question, answer):
    obj = {"question": question, "answer": answer}
    try:
        a = parse_record(obj, "x")
    except DataError:
        return
    b = parse_record(json.loads(json.dumps({"question": f"  {question}\n", "answer": f"\t{answer} "})), "x")
    assert a.id == b.id


RECORDS = [
    Record(id="s", question="What does CPU stand for?", answer="Central Processing Unit", kind="short",
           aliases=["processor"]),
    Record(id="m", question="Which is a colour?", answer="B", kind="mcq", choices={"A": "dog", "B": "blue"}),
    Record(id="n", question="What is the band edge?", answer="18.068 MHz", kind="short"),
    Record(id="l", question="Define RAM", answer="Random access memory, the working memory of a computer", kind="long"),
]


@settings(derandomize=True, max_examples=300)
@given(st.sampled_from(RECORDS), st.text(max_size=80), st.sampled_from(["", " ", "\n", "\t "]))
def test_rule_grading_never_fails_and_ignores_case_and_surrounding_space(record, response, pad):
    grade, = auto_grade([record], [response])
    assert 0.0 <= grade.score <= 1.0 and grade.grader
    # A bare capital at the start is an option letter by design ("B) blue"), so for multiple
    # choice only the surrounding space is free; elsewhere case is too.
    variants = [f"{pad}{response}{pad}"] + ([] if record.kind == "mcq" else [response.upper(), response.lower()])
    for variant in variants:
        assert auto_grade([record], [variant])[0].correct == grade.correct
