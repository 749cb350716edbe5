"""Training targets in the model's own words.

Trained on bare references, a small model learns to answer in a new form ("Lima", where it used to
say "The capital of Peru is Lima.") and in that form loses facts it knew; trained on answers in its
own way of answering, it keeps them (issue 14). So with `--targets own` (default):
- a known record is trained, when it is, on the model's own right answer from the diagnosis;
- an unknown record on the model's restatement of its reference: the model answers the question
  again with the reference shown to it, and that answer is the target when the grader credits it,
  else the reference (for multiple choice, the letter with its option's text).
`--targets reference` trains every record on its bare reference, as the paper does.
"""

from dataclasses import replace

from .answer import Answerer
from .data import Record
from .grade import Grader, reference_text
from .resumable_rows import graded

TARGETS = ("own", "reference")  # --targets
HINT = "The correct answer is: {}. Answer the question in your usual way."


def hinted(record: Record) -> Record:
    """The record asked with its reference shown (the id stays: the answer is about this record)."""
    return replace(record, question=f"{record.question}\n\n{HINT.format(reference_text(record).rstrip('.'))}")


def restate(answer: Answerer, grade: Grader, records: list[Record]) -> list[dict]:
    """Rows {id, response, correct, grader, score, unsure}: the model's answers with the reference shown,
    graded against the records as they are asked in training."""
    return graded(records, answer([hinted(r) for r in records], 0.0), grade)


def target_for(record: Record, diagnosis: dict, restatement: dict | None, targets: str) -> tuple[str, str]:
    """(target, where it comes from) of a training record."""
    if targets == "reference":
        return record.answer, "the reference"
    if diagnosis["correct"] and diagnosis.get("response"):
        return diagnosis["response"], "its own answer"
    if restatement and restatement["correct"]:
        return restatement["response"], "its restatement of the reference"
    why = "not credited" if restatement else "not asked for"
    return reference_text(record), f"the reference (its restatement was {why})"
