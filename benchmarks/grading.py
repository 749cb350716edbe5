"""How far each grader agrees with reference labels on real model answers, and how fast it is.

    python -m benchmarks.grading [--answers benchmarks/answers.jsonl] [--per-set 200]
    python -m benchmarks.grading --judge-speed 200 [--judge-scores FILE]

The answers are generated once by benchmarks/answers.py (SmolLM2-135M-Instruct, greedy, as the
loop's diagnosis asks) and kept in a file, so every run grades the same answers. The reference
labels are stated in the output with their limits; the judge (the same SmolLM2-135M) gets a
threshold chosen on one set and is checked on another.
"""

import argparse
import json
import random
import re
import time
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass

from slearn_mlx.blas import setup

setup()  # OpenBLAS before mlx, as the command does (SLEARN_MLX_BLAS=reference keeps the wheel's)

from slearn_mlx.data import Record, choices_of, load_records
from slearn_mlx.grade import (
    JUDGED_KINDS, KEY_TERMS, LONG_THRESHOLD, alias_contains, auto_grade, exact_match, long_overlap, normalize,
    references, says, shares_key_terms, token_f1,
)
from slearn_mlx.judge import JUDGE_THRESHOLD, judge
from slearn_mlx.models import load_model, resolve_model

from . import best_threshold, fmt, kappa
from .answers import ANSWERS, DATASETS, SEED, answered, generate

REFERENCE_LABELS = """\
Reference labels, and their limits:
  short  the response contains the dataset's answer or one of its aliases as whole words, after normalising
         (naive alias-contains: no guard against echoing the question or listing guesses; misses paraphrases,
         misspellings and answers the alias list lacks).
  mcq    the dataset's answer letter, read by a strict extractor: the whole response is the letter ("B", "(B)",
         "B.", "Answer: B"), optionally followed by that option's own text (or its start, when the token budget
         cut it); anything else is wrong, so a right answer inside a sentence counts as wrong.
  long   no label exists for free answers. Labelled instead: pairs built from the dataset, the first sentence of a
         record's own definition (right) and of another record's (wrong); verbatim text favours overlap rules."""
# (chosen on, checked on) per kind: the judge's threshold is tuned on the first set only.
THRESHOLD_SETS = {"short": ("trivia_mixed", ["vera_acronyms"]),
                  "mcq": ("mmlu_clinical", ["quartz_science", "fcc_amateur_extra"]),
                  "long": ("foldoc_pairs:a", ["foldoc_pairs:b"])}
KIND_OF_SET = {"trivia_mixed": "short", "vera_acronyms": "short", "mmlu_clinical": "mcq", "quartz_science": "mcq",
               "fcc_amateur_extra": "mcq", "foldoc_pairs:a": "long", "foldoc_pairs:b": "long"}
JUDGE_CALL = 64  # items per call of the judge: what the loop hands it, one answer batch


@dataclass
class Item:
    record: Record
    response: str
    label: bool | None  # the reference label; None where there is none


def contains_reference(response: str, record: Record) -> bool:
    said = normalize(response)
    return any(says(said, ref) for ref in references(record))


STRICT_LETTER = re.compile(r"\W*(?:answer\s*(?:is)?\s*:?\s*)?\(?([A-J])\)?[.):]?\s*(.*)", re.IGNORECASE | re.DOTALL)


def strict_letter(response: str, record: Record) -> bool:
    match = STRICT_LETTER.fullmatch(response.strip())
    if not match or match.group(1).upper() != record.answer.upper():
        return False
    rest = normalize(match.group(2))
    # The option's text may be cut short by the answer's token budget.
    return normalize((choices_of(record) or {}).get(record.answer.upper(), "")).startswith(rest)


def first_sentence(text: str) -> str:
    """A FOLDOC definition's first sentence, without its "<topic>" tag and "1." sense number."""
    return re.split(r"(?<=[.!?])\s", re.sub(r"^(<[^>]*>\s*)?(\d+\.\s*)?", "", text), maxsplit=1)[0]


def foldoc_pairs(records: list[Record]) -> list[Item]:
    """Each record with its own definition's first sentence (right) and the next record's (wrong)."""
    shifted = records[1:] + records[:1]
    return [item for own, other in zip(records, shifted)
            for item in (Item(own, first_sentence(own.answer), True), Item(own, first_sentence(other.answer), False))]


def load_items(answers_path) -> dict[str, list[Item]]:
    by_set = answered(answers_path)
    items = {}
    for name, rows in by_set.items():
        records = {r.id: r for r in load_records(DATASETS / f"{name}.jsonl")}
        kind_items = [Item(records[i], row["response"], None) for i, row in sorted(rows.items())]
        if name == "foldoc_definitions":
            items["foldoc_answers"] = kind_items
            pairs = foldoc_pairs([item.record for item in kind_items])
            random.Random(SEED).shuffle(pairs)
            half = len(pairs) // 2
            items["foldoc_pairs:a"], items["foldoc_pairs:b"] = pairs[:half], pairs[half:]
            continue
        label = contains_reference if KIND_OF_SET[name] == "short" else strict_letter
        items[name] = [Item(i.record, i.response, label(i.response, i.record)) for i in kind_items]
    return items


def agreement_row(name: str, grader: str, items: list[Item], verdicts: list[bool], seconds: float,
                  unsure: float | None = None) -> dict:
    labels = [i.label for i in items]
    right = [v for v, l in zip(verdicts, labels) if l]
    wrong = [v for v, l in zip(verdicts, labels) if not l]
    return {
        "set": name, "grader": grader, "n": len(items), "label_right": sum(labels) / len(labels),
        "agreement": sum(v == l for v, l in zip(verdicts, labels)) / len(labels), "kappa": kappa(labels, verdicts),
        "false_correct": sum(wrong) / len(wrong) if wrong else None,
        "false_wrong": (len(right) - sum(right)) / len(right) if right else None,
        "per_second": len(items) / seconds if seconds else None, "unsure": unsure,
    }


def unsure_share(items: list[Item]) -> float:
    """The share of answers auto grades unsure (hedged, refused): SimpleQA's "not attempted"."""
    grades = auto_grade([i.record for i in items], [i.response for i in items])
    return sum(g.unsure for g in grades) / len(grades)


def timed(grade: Callable[[str, Record], bool], items: list[Item]) -> tuple[list[bool], float]:
    start = time.perf_counter()
    verdicts = [bool(grade(i.response, i.record)) for i in items]
    return verdicts, time.perf_counter() - start


def rule_graders(kind: str) -> dict[str, Callable[[str, Record], bool]]:
    def auto(response, record):
        return auto_grade([record], [response])[0].correct

    if kind == "short":
        return {"exact_match": exact_match, "alias_contains": alias_contains, "auto": auto}
    if kind == "mcq":
        return {"auto (option_letter)": auto}
    return {"token_f1>=0.3": lambda resp, rec: token_f1(resp, rec.answer) >= 0.3,
            f"rouge_l>={LONG_THRESHOLD}": lambda resp, rec: long_overlap(resp, rec) >= LONG_THRESHOLD, "auto": auto}


def judge_scores(model, tokenizer, items: list[Item]) -> tuple[list[float], float]:
    """P(correct) for every item, in calls as the loop makes them, and the seconds it took."""
    start = time.perf_counter()
    scores = []
    for i in range(0, len(items), JUDGE_CALL):
        batch = items[i : i + JUDGE_CALL]
        scores += [g.score for g in judge(model, tokenizer, [(it.record, it.response) for it in batch])]
    return scores, time.perf_counter() - start


def print_table(rows: list[dict]) -> None:
    print("| set | grader | n | label right | agreement | kappa | false-correct | false-wrong | unsure | items/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['grader']} | {r['n']} | {fmt(r['label_right'], 2)} | {fmt(r['agreement'])} | "
              f"{fmt(r['kappa'])} | {fmt(r['false_correct'])} | {fmt(r['false_wrong'])} | {fmt(r['unsure'])} | "
              f"{fmt(r['per_second'], 0)} |")


def judge_speed(answers_path: Path, count: int, scores_path: Path | None) -> None:
    """The judge alone on the first `count` short answers (half trivia_mixed, half vera_acronyms): verdicts/s,
    and, with a file of scores from another build, how many verdicts differ, so a faster judge is shown to
    be the same judge."""
    by_set = answered(answers_path)
    items = []
    for name in ("trivia_mixed", "vera_acronyms"):
        records = {r.id: r for r in load_records(DATASETS / f"{name}.jsonl")}
        items += [Item(records[i], row["response"], None) for i, row in sorted(by_set[name].items())][: count // 2]
    model, tokenizer = load_model(resolve_model(None))
    judge(model, tokenizer, [(i.record, i.response) for i in items[:2]])  # first-call set-up out of the timing
    scores, seconds = judge_scores(model, tokenizer, items)
    print(f"judge on {len(items)} short answers, calls of {JUDGE_CALL}: {seconds:.1f} s, {len(items) / seconds:.2f} verdicts/s")
    if scores_path is None:
        return
    if not scores_path.exists():
        scores_path.write_text(json.dumps(scores))
        print(f"scores written to {scores_path}")
        return
    other = json.loads(scores_path.read_text())[: len(scores)]
    flipped = sum((a >= JUDGE_THRESHOLD) != (b >= JUDGE_THRESHOLD) for a, b in zip(scores, other))
    print(f"against {scores_path}: {flipped} of {len(other)} verdicts differ at {JUDGE_THRESHOLD}, "
          f"largest score difference {max(abs(a - b) for a, b in zip(scores, other)):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=Path, default=ANSWERS)
    parser.add_argument("--per-set", type=int, default=200)
    parser.add_argument("--judge-on", nargs="*", choices=list(THRESHOLD_SETS), default=["short"],
                        help="Kinds to run the judge on [default: short; at ~0.2 verdicts/s on a 2-core CPU, "
                             "mcq and long prompts take an hour]; none for rules only.")
    parser.add_argument("--judge-speed", type=int, metavar="N",
                        help="Only time the judge on N short answers (no agreement table).")
    parser.add_argument("--judge-scores", type=Path, metavar="FILE",
                        help="With --judge-speed: write the scores to FILE, or compare with the scores in it.")
    args = parser.parse_args()
    if args.judge_speed:
        return judge_speed(args.answers, args.judge_speed, args.judge_scores)
    generate(args.answers, args.per_set)  # a no-op once the file holds every answer
    items = load_items(args.answers)
    print(f"answers: {args.answers} (SmolLM2-135M-Instruct, greedy)\n\n{REFERENCE_LABELS}\n")

    rows = []
    for name, kind in KIND_OF_SET.items():
        for grader, grade in rule_graders(kind).items():
            unsure = unsure_share(items[name]) if grader.startswith("auto") else None
            rows.append(agreement_row(name, grader, items[name], *timed(grade, items[name]), unsure))

    if args.judge_on:
        model, tokenizer = load_model(resolve_model(None))
        scores, seconds = {}, {}
        for name in [n for n, kind in KIND_OF_SET.items() if kind in args.judge_on]:
            scores[name], seconds[name] = judge_scores(model, tokenizer, items[name])
        for kind in args.judge_on:
            chosen_on, checked_on = THRESHOLD_SETS[kind]
            threshold = best_threshold([i.label for i in items[chosen_on]], scores[chosen_on])
            for name in [chosen_on, *checked_on]:
                verdicts = [s >= threshold for s in scores[name]]
                where = "chosen here" if name == chosen_on else f"from {chosen_on}"
                rows.append(agreement_row(name, f"judge@{threshold:g} ({where})", items[name], verdicts, seconds[name]))
                verdicts = [s >= 0.5 for s in scores[name]]
                rows.append(agreement_row(name, "judge@0.5", items[name], verdicts, seconds[name]))
        rows.sort(key=lambda r: list(KIND_OF_SET).index(r["set"]))
        for kind in args.judge_on:
            sets = [n for n, k in KIND_OF_SET.items() if k == kind]
            rate = sum(len(items[n]) for n in sets) / sum(seconds[n] for n in sets)
            print(f"judge throughput on {kind} answers: {rate:.2f} verdicts/s (calls of {JUDGE_CALL})")
    print_table(rows)

    credited = {grader: sum(grade(i.response, i.record) for i in items["foldoc_answers"])
                for grader, grade in rule_graders("long").items()}
    print(f"\nfoldoc_definitions, {len(items['foldoc_answers'])} real model answers (no label): credited "
          + ", ".join(f"{g} {c}" for g, c in credited.items()))
    print(f"judge measured on: {', '.join(args.judge_on) or 'nothing'}; "
          f"auto sends these kinds to the judge: {', '.join(sorted(JUDGED_KINDS)) or 'none'}")
    print_key_terms(items)
    print_disagreements(items)


def print_key_terms(items: dict[str, list[Item]]) -> None:
    """The long rule's kappa with each number of the reference's key terms an answer must share: KEY_TERMS
    is the best on foldoc_pairs:a (the fewest, on a tie), checked on foldoc_pairs:b."""
    print(f"\nkappa of rouge_l>={LONG_THRESHOLD} when a long answer must also share N key terms "
          f"(KEY_TERMS = {KEY_TERMS}, chosen on foldoc_pairs:a):")
    for needed in range(5):
        kappas = []
        for name in ("foldoc_pairs:a", "foldoc_pairs:b"):
            verdicts = [long_overlap(i.response, i.record) >= LONG_THRESHOLD
                        and shares_key_terms(i.response, i.record, needed) for i in items[name]]
            kappas.append(f"{name} {fmt(kappa([i.label for i in items[name]], verdicts))}")
        print(f"  N={needed}: {', '.join(kappas)}")


def print_disagreements(items: dict[str, list[Item]], shown: int = 4) -> None:
    """Where auto and the reference label differ, so a reader can judge which one is right."""
    print("\nauto vs the reference label, where they differ (label, auto, response | reference):")
    for name in KIND_OF_SET:
        differing = [(i, g) for i, g in zip(items[name], auto_grade([i.record for i in items[name]],
                                                                    [i.response for i in items[name]]))
                     if g.correct != i.label]
        for item, grade in differing[:shown]:
            print(f"  {name}: {item.label!s:5} {grade.correct!s:5} {item.response[:90]!r} | {item.record.answer[:40]!r}")
        if len(differing) > shown:
            print(f"  {name}: ... {len(differing) - shown} more")


if __name__ == "__main__":
    main()
