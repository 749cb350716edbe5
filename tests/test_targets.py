from slearn_mlx.prompts import question_text
from slearn_mlx.data import Record
from slearn_mlx.grade import auto_grade
from slearn_mlx.targets import hinted, restate, target_for

CAPITAL = Record(id="peru", question="What is the capital of Peru?", answer="Lima.", kind="short")
OPTIONS = Record(id="ball", question="Which falls faster in air?", answer="b", kind="mcq",
                 choices={"A": "a feather", "B": "a steel ball"})


def test_the_hint_shows_the_reference_and_asks_for_the_usual_way():
    asked = question_text(hinted(CAPITAL))
    assert asked == "What is the capital of Peru?\n\nThe correct answer is: Lima. Answer the question in your usual way."
    assert hinted(CAPITAL).id == CAPITAL.id


def test_a_multiple_choice_hint_names_the_option_with_its_text_before_the_options():
    asked = question_text(hinted(OPTIONS))
    assert "The correct answer is: b) a steel ball." in asked
    assert asked.index("correct answer is") < asked.index("A) a feather")


def test_restatements_are_graded_against_the_question_as_trained():
    answers = {"peru": "The capital of Peru is Lima.", "ball": "A) a feather"}
    seen = []

    def answer(records, temperature):
        seen.extend(records)
        return [answers[r.id] for r in records]

    rows = restate(answer, lambda records, responses: auto_grade(records, responses), [CAPITAL, OPTIONS])
    assert [r.question for r in seen] == [hinted(CAPITAL).question, hinted(OPTIONS).question]
    assert [(row["id"], row["correct"]) for row in rows] == [("peru", True), ("ball", False)]


def test_targets_in_the_models_own_words_fall_back_to_the_reference():
    known = {"correct": True, "response": "The capital of Peru is Lima."}
    wrong = {"correct": False, "response": "Cusco."}
    credited = {"correct": True, "response": "The capital of Peru is Lima, of course."}
    assert target_for(CAPITAL, known, None, "own")[0] == "The capital of Peru is Lima."
    assert target_for(CAPITAL, wrong, credited, "own")[0] == "The capital of Peru is Lima, of course."
    assert target_for(CAPITAL, wrong, {**credited, "correct": False}, "own")[0] == "Lima."
    assert target_for(OPTIONS, wrong, None, "own")[0] == "b) a steel ball"  # the letter with its option's text
    assert target_for(OPTIONS, known, None, "reference")[0] == "b"
