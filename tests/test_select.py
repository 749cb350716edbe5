import pytest

from slearn_mlx.data import Record
from slearn_mlx.select import SelectConfig, select_records, slick_category

RECORDS = [Record(id=f"r{i}", question=f"Q{i}", answer=f"A{i}", kind="short") for i in range(10)]
# r0-r5 known (own answers are verbose), r6-r9 unknown; r9 is outside the training split.
DIAGNOSIS = [{"id": r.id, "correct": i < 6, "response": f"The answer is A{i}.",
              "samples_correct": [i < 3, True] if i < 6 else [i == 6, False]} for i, r in enumerate(RECORDS)]
TRAINING = {r.id for r in RECORDS[:9]}


def chosen(**config):
    rows = select_records(RECORDS, DIAGNOSIS, TRAINING, SelectConfig(**config), seed=0)
    assert len(rows) == 9 and all(row["reason"] for row in rows)  # every training record says why
    return {row["id"]: row["target"] for row in rows if row["selected"]}


def test_unknown_keeps_the_wrong_answers_of_the_training_split():
    assert chosen(policy="unknown") == {"r6": "A6", "r7": "A7", "r8": "A8"}


def test_all_keeps_every_training_record():
    assert set(chosen(policy="all")) == TRAINING


@pytest.mark.parametrize("target, expected", [("reference", "A{}"), ("own", "The answer is A{}.")])
def test_replay_adds_a_share_of_the_known_with_the_chosen_target(target, expected):
    picked = chosen(policy="replay", replay_fraction=0.5, replay_target=target)
    replayed = {i: t for i, t in picked.items() if i not in {"r6", "r7", "r8"}}
    assert len(replayed) == 3 and set(picked) >= {"r6", "r7", "r8"}
    assert all(t == expected.format(i[1:]) for i, t in replayed.items())
    assert replayed == {i: t for i, t in chosen(policy="replay", replay_fraction=0.5, replay_target=target).items()
                        if i in replayed}  # seeded


def test_slick_categories_and_default_keep():
    assert slick_category(True, [True, True]) == "HighlyKnown"
    assert slick_category(True, [True, False]) == "MaybeKnown"
    assert slick_category(False, [False, True]) == "WeaklyKnown"
    assert slick_category(False, [False, False]) == "Unknown"
    # r0-r2 HighlyKnown, r3-r5 MaybeKnown, r6 WeaklyKnown, r7-r8 Unknown
    assert set(chosen(policy="slick")) == {"r3", "r4", "r5", "r6", "r7", "r8"}
    assert set(chosen(policy="slick", slick_keep=("Unknown",))) == {"r7", "r8"}


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown policy 'best'"):
        chosen(policy="best")
