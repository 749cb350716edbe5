"""The rule graders against a careful reader, on answers phrased to trip them.

    python -m benchmarks.adversarial [--file benchmarks/adversarial.jsonl] [--show]

Each line of the file is a record in the project's own shape (question, answer, aliases or choices,
kind), a response, the label a careful reader gives it (`label`) and the kind of trap it sets
(`case`). The pairs were written for issue #24, fresh, not copied from any set the graders were built
on; each trap comes with the nearest answer that must be graded the other way. The table is `auto`'s
agreement with the labels per kind of trap; --show lists the pairs where they differ.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from slearn_mlx.data import Record, parse_record
from slearn_mlx.grade import auto_grade

from . import fmt

ADVERSARIAL = Path(__file__).resolve().parent / "adversarial.jsonl"


@dataclass
class Pair:
    case: str
    record: Record
    response: str
    label: bool


def load_pairs(path: Path = ADVERSARIAL) -> list[Pair]:
    pairs = []
    for line, text in enumerate(Path(path).read_text().splitlines(), start=1):
        row = json.loads(text)
        pairs.append(Pair(row["case"], parse_record(row, f"{path}:{line}"), row["response"], row["label"]))
    return pairs


def verdicts(pairs: list[Pair]) -> list[bool]:
    return [g.correct for g in auto_grade([p.record for p in pairs], [p.response for p in pairs])]


def agreement_by_case(pairs: list[Pair]) -> dict[str, tuple[int, int]]:
    """{case: (pairs auto agrees on, pairs)}, in the file's order, with "all" last."""
    table: dict[str, tuple[int, int]] = {}
    for pair, verdict in zip(pairs, verdicts(pairs)):
        for case in (pair.case, "all"):
            agreed, count = table.get(case, (0, 0))
            table[case] = (agreed + (verdict == pair.label), count + 1)
    table["all"] = table.pop("all")
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=ADVERSARIAL)
    parser.add_argument("--show", action="store_true", help="List the pairs where auto and the label differ.")
    args = parser.parse_args()
    pairs = load_pairs(args.file)
    print(f"pairs: {args.file} ({len(pairs)}, {sum(p.label for p in pairs)} labelled right)\n")
    print("| kind of trap | pairs | auto agrees | agreement |")
    print("|---|---|---|---|")
    for case, (agreed, count) in agreement_by_case(pairs).items():
        print(f"| {case} | {count} | {agreed} | {fmt(agreed / count)} |")
    if args.show:
        print("\nwhere auto and the label differ (label, case, response | reference):")
        for pair, verdict in zip(pairs, verdicts(pairs)):
            if verdict != pair.label:
                print(f"  {pair.label!s:5} {pair.case}: {pair.response!r} | {pair.record.answer!r}")


if __name__ == "__main__":
    main()
