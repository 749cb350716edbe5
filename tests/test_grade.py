import pytest

from slearn_mlx.data import Record
from slearn_mlx.grade import alias_contains, exact_match, judge, normalize, option_letter


def short(question="What does CPU stand for?", answer="Central Processing Unit", aliases=()):
    return Record(id="x", question=question, answer=answer, kind="short", aliases=list(aliases))


def test_normalize_folds_case_accents_punctuation_articles():
    assert normalize("  The Café-Bar, an   INN! ") == "cafe bar inn"


@pytest.mark.parametrize("response, correct", [
    ("CPU stands for Central Processing Unit.", True),
    ("central processing unit", True),
    ("It is the CENTRAL  processing-unit of a computer", True),  # punctuation folds to spaces
    ("Central Processing Units are chips", False),  # whole words only
    ("Computer Power Unit", False),
    ("", False),
])
def test_alias_contains(response, correct):
    assert alias_contains(response, short()) is correct


def test_alias_contains_accepts_aliases():
    record = short("Who wrote Hamlet?", "William Shakespeare", ["Shakespeare"])
    assert alias_contains("It was Shakespeare.", record)


def test_a_reference_inside_the_question_is_not_credited_by_an_echo():
    record = short("What is the capital of Guinea-Bissau?", "Bissau")
    assert not alias_contains("The capital of Guinea-Bissau is Portoão.", record)
    assert exact_match("Bissau", record) and alias_contains("Bissau", record)


@pytest.mark.parametrize("response, letter", [
    ("B", "B"), ("(b)", "B"), ("Answer: B", "B"), ("B) blue", "B"), ("The answer is (C).", "C"),
    ("blue", "B"), ("I think option D", "D"), ("no idea", None),
])
def test_option_letter_forms(response, letter):
    assert option_letter(response, {"A": "red", "B": "blue", "C": "green", "D": "yellow"}) == letter


def test_judge_batched_equals_one_at_a_time(tiny_model):
    from slearn_mlx.models import load_model

    model, tokenizer = load_model(tiny_model)
    record = Record(id="x", question="Explain RAM", answer="Random Access Memory, the working memory", kind="long")
    items = [(record, "Random Access Memory"), (record, "a much longer answer " * 5), (record, "")]
    together = judge(model, tokenizer, items)
    alone = [judge(model, tokenizer, [item])[0] for item in items]
    for a, b in zip(together, alone):
        assert 0.0 <= a.score <= 1.0 and a.grader == "judge"
        assert a.score == pytest.approx(b.score, abs=1e-4)
