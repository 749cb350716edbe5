"""Choose the records to train on from the diagnosis, and say why each was kept or dropped.

- `unknown`: the SLearnLLM rule, train only on what the model answered wrongly.
- `all`: every training record, the baseline the method is compared with.
- `replay`: the unknown records plus a share of the known ones, so that training keeps
  rehearsing what the model already knew. Trained on its unknown records alone, a small
  model learns them and forgets much of what it knew (README, "A measured default run").
  A known record's target is its reference answer, or with `replay_target="own"` the
  model's own correct answer from the diagnosis (its knowledge in its own words).
- `slick`: SliCK categories (Gekhman et al. 2024) from the greedy answer and k sampled
  answers: HighlyKnown (greedy and all samples right), MaybeKnown (greedy right, some sample
  wrong), WeaklyKnown (greedy wrong, some sample right), Unknown (none right). Keeps the
  categories in `slick_keep`, by default all but HighlyKnown.
Only records of the training split are ever selected.
"""

import random
from dataclasses import dataclass

POLICIES = ("unknown", "all", "replay", "slick")


@dataclass
class SelectConfig:
    # replay by default: on the default data it kept more of what the model knew and scored best on
    # the whole set (bench, README "Comparing policies"); `unknown` is the paper's rule, for comparison.
    policy: str = "replay"
    # Share of the known training records replayed: with a learning rate of 1e-4, 0.75 kept the most of
    # the known on the default data and two shared sets (benchmarks/settings.py, README "Choosing the defaults").
    replay_fraction: float = 0.75
    replay_target: str = "reference"  # or "own": the model's own correct answer
    slick_samples: int = 4
    slick_temperature: float = 0.7
    slick_keep: tuple[str, ...] = ("MaybeKnown", "WeaklyKnown", "Unknown")


def slick_category(greedy_correct: bool, samples_correct: list[bool]) -> str:
    if greedy_correct:
        return "HighlyKnown" if all(samples_correct) else "MaybeKnown"
    return "WeaklyKnown" if any(samples_correct) else "Unknown"


def decide(config: SelectConfig, record, row: dict, replayed: set[str]) -> tuple[bool, str, str]:
    """(keep, target, reason) for one training record and its diagnosis row."""
    right = "answered correctly" if row["correct"] else "answered wrongly"
    if config.policy == "all":
        return True, record.answer, f"{right}; policy all keeps every record"
    if config.policy == "slick":
        category = slick_category(row["correct"], row["samples_correct"])
        return category in config.slick_keep, record.answer, f"SliCK {category}"
    if not row["correct"]:
        return True, record.answer, right
    if config.policy == "replay" and record.id in replayed:
        if config.replay_target == "own" and row.get("response"):
            return True, row["response"], f"{right}; replayed with its own answer"
        return True, record.answer, f"{right}; replayed with its reference answer"
    return False, "", f"{right}; already known"


def select_records(records, diagnosis: list[dict], training_ids: set[str], config: SelectConfig,
                   seed: int) -> list[dict]:
    """One row per training record: {id, selected, target, reason}."""
    if config.policy not in POLICIES:
        raise ValueError(f"unknown policy {config.policy!r}; choose one of {', '.join(POLICIES)}")
    rows = {row["id"]: row for row in diagnosis}
    training = [r for r in records if r.id in training_ids]
    known = sorted(r.id for r in training if rows[r.id]["correct"])
    replayed = set(random.Random(seed).sample(known, round(len(known) * config.replay_fraction)))
    decisions = []
    for record in training:
        keep, target, reason = decide(config, record, rows[record.id], replayed)
        decisions.append({"id": record.id, "selected": keep, "target": target, "reason": reason})
    return decisions
