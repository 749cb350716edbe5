"""Generate the answers the grading benchmark grades, once, into a file that later runs reuse.

    python -m benchmarks.answers [--out benchmarks/answers.jsonl] [--per-set 200]

A seeded sample of each real dataset in ../shared/datasets is answered by the default model
(SmolLM2-135M-Instruct) exactly as the loop's diagnosis answers it. Rows are appended per
batch, so an interrupted run continues; a finished file is never regenerated, so every
benchmark run grades the same answers.
"""

import argparse
import random
from pathlib import Path

from tqdm import tqdm

from slearn_mlx.blas import setup

setup()  # OpenBLAS before mlx, as the command does (SLEARN_MLX_BLAS=reference keeps the wheel's)

from slearn_mlx.answer import answer_batch, length_sorted_batches
from slearn_mlx.artifacts import append_rows, read_rows
from slearn_mlx.data import Record, load_records
from slearn_mlx.models import load_model, resolve_model

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ANSWERS = Path(__file__).resolve().parent / "answers.jsonl"
# Long answers cost four times the tokens of short ones; half as many keeps the run modest.
SETS = {"trivia_mixed": 1.0, "vera_acronyms": 1.0, "mmlu_clinical": 1.0, "quartz_science": 1.0,
        "fcc_amateur_extra": 1.0, "foldoc_definitions": 0.5}
SEED = 0


def sample(name: str, per_set: int) -> list[Record]:
    records = load_records(DATASETS / f"{name}.jsonl")
    return random.Random(SEED).sample(records, round(per_set * SETS[name]))


def answered(path: Path) -> dict[str, dict[str, dict]]:
    """{set: {record id: row}} of the answers already in the file."""
    by_set: dict[str, dict[str, dict]] = {}
    for row in read_rows(path):
        by_set.setdefault(row["set"], {})[row["id"]] = row
    return by_set


def generate(path: Path, per_set: int, batch_size: int = 32) -> None:
    done = answered(path)
    todo = {name: [r for r in sample(name, per_set) if r.id not in done.get(name, {})] for name in SETS}
    if not any(todo.values()):
        return
    model_path = resolve_model(None)
    model, tokenizer = load_model(model_path)
    for name, records in todo.items():
        for batch in tqdm(length_sorted_batches(records, batch_size), desc=name, unit="batch"):
            responses = answer_batch(model, tokenizer, batch)
            append_rows(path, [{"set": name, "id": r.id, "model": model_path.name, "response": resp}
                               for r, resp in zip(batch, responses)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ANSWERS)
    parser.add_argument("--per-set", type=int, default=200)
    args = parser.parse_args()
    generate(args.out, args.per_set)
    print(f"answers: {args.out}")


if __name__ == "__main__":
    main()
