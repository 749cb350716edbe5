"""Choose the records the first epoch trains on, and each training record's target, and say why.

The policies, by name (POLICIES: a package adds its own under the entry-point group slearn_mlx.policies,
plugins.py):
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
comes back trains on the target chosen here (targets.py). `config` is the run's SelectConfig.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

from .data import Record
from .plugins import Registry
from .targets import TARGETS, target_for


@dataclass(frozen=True)
class Policy:
    """`choose(records, diagnosis, config, seed)`: of each training record, in order, whether the first
    epoch trains it and why, from its diagnosis row (`diagnosis` by id) and the run's settings."""
    choose: Callable[[list[Record], dict[str, dict], object, int], list[tuple[bool, str]]]
    samples: bool = False  # reads SliCK's answers sampled at a temperature (a row's samples_correct): `sample` runs
    by_diagnosis: bool = True  # picks by the diagnosis's grades; `all` does not, and bench charges it no diagnosis


def unknown(records: list[Record], diagnosis: dict[str, dict], config, seed: int) -> list[tuple[bool, str]]:
    return [(True, "to be learned") if not diagnosis[r.id]["correct"] else (False, "already known") for r in records]


def every_record(records: list[Record], diagnosis: dict[str, dict], config, seed: int) -> list[tuple[bool, str]]:
    return [(True, "policy all keeps every record") for _ in records]


def replay(records: list[Record], diagnosis: dict[str, dict], config, seed: int) -> list[tuple[bool, str]]:
    known = sorted(r.id for r in records if diagnosis[r.id]["correct"])
    replayed = set(random.Random(seed).sample(known, round(len(known) * config.replay_fraction)))
    return [(True, "replayed") if r.id in replayed else pick
            for r, pick in zip(records, unknown(records, diagnosis, config, seed))]


def slick_category(greedy_correct: bool, samples_correct: list[bool]) -> str:
    if greedy_correct:
        return "HighlyKnown" if all(samples_correct) else "MaybeKnown"
    return "WeaklyKnown" if any(samples_correct) else "Unknown"


def slick(records: list[Record], diagnosis: dict[str, dict], config, seed: int) -> list[tuple[bool, str]]:
    categories = [slick_category(diagnosis[r.id]["correct"], diagnosis[r.id]["samples_correct"]) for r in records]
    return [(category in config.slick_keep, f"SliCK {category}") for category in categories]


POLICIES = Registry("policy", "slearn_mlx.policies", Policy, {
    "unknown": Policy(unknown), "all": Policy(every_record, by_diagnosis=False), "replay": Policy(replay),
    "slick": Policy(slick, samples=True)})


def select_records(records, diagnosis: list[dict], training_ids: set[str], config, seed: int,
                   restatements: dict[str, dict] | None = None) -> list[dict]:
    """One row per training record: {id, known, selected, target, expected, reason}.

    `expected` is what the check after an epoch wants to hear from the model: the target, or for a
    known record the answer it gave in the diagnosis (which proves it still knows it).
    """
    policy = POLICIES[config.policy]
    if config.targets not in TARGETS:
        raise ValueError(f"unknown targets {config.targets!r}; choose one of {', '.join(TARGETS)}")
    rows = {row["id"]: row for row in diagnosis}
    restatements = restatements or {}
    training = [r for r in records if r.id in training_ids]
    selection = []
    for record, (selected, why) in zip(training, policy.choose(training, rows, config, seed), strict=True):
        row = rows[record.id]
        target, source = target_for(record, row, restatements.get(record.id), config.targets)
        answered = "answered correctly" if row["correct"] else "answered wrongly"
        selection.append({"id": record.id, "known": row["correct"], "selected": selected, "target": target,
                          "expected": (row["correct"] and row.get("response")) or target,
                          "reason": f"{answered}; {why}; target: {source}"})
    return selection
