"""Choose the records the first epoch trains on, and each training record's target, and say why.

- `unknown`: the SLearnLLM rule, train only on what the model answered wrongly.
- `all`: every training record, the baseline the method is compared with.
- `replay`: the unknown records plus a share of the known ones, so that training keeps
  rehearsing what the model already knew.
- `slick`: SliCK categories (Gekhman et al. 2024) from the greedy answer and k sampled
  answers: HighlyKnown (greedy and all samples right), MaybeKnown (greedy right, some sample
  wrong), WeaklyKnown (greedy wrong, some sample right), Unknown (none right). Keeps the
  categories in `slick_keep`, by default all but HighlyKnown.
Only records of the training split are ever selected. Every training record gets a row, selected or
not: after each epoch the check moves records in and out of training (train.py), and a record that
comes back trains on the target chosen here (targets.py).
"""

import random

from .config import POLICIES, TARGETS, SelectConfig
from .targets import target_for


def slick_category(greedy_correct: bool, samples_correct: list[bool]) -> str:
    if greedy_correct:
        return "HighlyKnown" if all(samples_correct) else "MaybeKnown"
    return "WeaklyKnown" if any(samples_correct) else "Unknown"


def first_epoch(config: SelectConfig, record, row: dict, replayed: set[str]) -> tuple[bool, str]:
    """(trained in the first epoch, why) for one training record and its diagnosis row."""
    if config.policy == "all":
        return True, "policy all keeps every record"
    if config.policy == "slick":
        category = slick_category(row["correct"], row["samples_correct"])
        return category in config.slick_keep, f"SliCK {category}"
    if not row["correct"]:
        return True, "to be learned"
    if config.policy == "replay" and record.id in replayed:
        return True, "replayed"
    return False, "already known"


def select_records(records, diagnosis: list[dict], training_ids: set[str], config: SelectConfig, seed: int,
                   restatements: dict[str, dict] | None = None) -> list[dict]:
    """One row per training record: {id, known, selected, target, expected, reason}.

    `expected` is what the check after an epoch wants to hear from the model: the target, or for a
    known record the answer it gave in the diagnosis (which proves it still knows it).
    """
    if config.policy not in POLICIES:
        raise ValueError(f"unknown policy {config.policy!r}; choose one of {', '.join(POLICIES)}")
    if config.targets not in TARGETS:
        raise ValueError(f"unknown targets {config.targets!r}; choose one of {', '.join(TARGETS)}")
    rows = {row["id"]: row for row in diagnosis}
    restatements = restatements or {}
    training = [r for r in records if r.id in training_ids]
    known = sorted(r.id for r in training if rows[r.id]["correct"])
    replayed = set(random.Random(seed).sample(known, round(len(known) * config.replay_fraction)))
    selection = []
    for record in training:
        row = rows[record.id]
        selected, why = first_epoch(config, record, row, replayed)
        target, source = target_for(record, row, restatements.get(record.id), config.targets)
        answered = "answered correctly" if row["correct"] else "answered wrongly"
        selection.append({"id": record.id, "known": row["correct"], "selected": selected, "target": target,
                          "expected": (row["correct"] and row.get("response")) or target,
                          "reason": f"{answered}; {why}; target: {source}"})
    return selection
