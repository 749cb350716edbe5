import pytest

from slearn_mlx.data import Record
from slearn_mlx.config import SelectConfig
from slearn_mlx.selection import select_records, slick_category

RECORDS = [Record(id=f"r{i}", question=f"Q{i}", answer=f"A{i}", kind="short") for i in range(10)]
# r0-r5 known (own answers are verbose), r6-r9 unknown; r9 is outside the training split.
DIAGNOSIS = [{"id": r.id, "correct": i < 6, "response": f"The answer is A{i}." if i < 6 else "Nothing",
              "samples_correct": [i < 3, True] if i < 6 else [i == 6, False]} for i, r in enumerate(RECORDS)]
TRAINING = {r.id for r in RECORDS[:9]}
# The model restated r6 and r7 with their reference shown; the grader credited r6 only.
RESTATEMENTS = {"r6": {"id": "r6", "response": "I am sure it is A6.", "correct": True},
                "r7": {"id": "r7", "response": "It is B7.", "correct": False}}


def selection(seed=0, **config):
    rows = select_records(RECORDS, DIAGNOSIS, TRAINING, SelectConfig(**config), seed, RESTATEMENTS)
    assert [row["id"] for row in rows] == [f"r{i}" for i in range(9)]  # every training record, selected or not
    assert all(row["reason"] for row in rows)  # and says why
    return {row["id"]: row for row in rows}


def chosen(seed=0, **config):
    return {i: row["target"] for i, row in selection(seed, **config).items() if row["selected"]}


def test_unknown_keeps_the_wrong_answers_with_targets_in_the_models_own_words():
    assert chosen(policy="unknown") == {"r6": "I am sure it is A6.", "r7": "A7", "r8": "A8"}
    rows = selection(policy="unknown")
    assert "restatement was not credited" in rows["r7"]["reason"] and "not asked for" in rows["r8"]["reason"]
    # a known record left out of the first epoch still has a target, its own answer, should it come back
    assert rows["r0"]["known"] and not rows["r0"]["selected"]
    assert rows["r0"]["target"] == rows["r0"]["expected"] == "The answer is A0."


def test_reference_targets_train_every_record_on_its_reference_as_the_paper_does():
    rows = selection(policy="all", targets="reference")
    assert {i: row["target"] for i, row in rows.items()} == {f"r{i}": f"A{i}" for i in range(9)}
    # what proves a known record still known is what it said, whatever it is trained on
    assert rows["r2"]["expected"] == "The answer is A2." and rows["r6"]["expected"] == "A6"


def test_all_keeps_every_training_record():
    assert set(chosen(policy="all")) == TRAINING


def test_replay_adds_a_seeded_share_of_the_known_with_their_own_answers():
    picked = chosen(policy="replay", replay_fraction=0.5)
    replayed = {i: t for i, t in picked.items() if i not in {"r6", "r7", "r8"}}
    assert len(replayed) == 3 and set(picked) >= {"r6", "r7", "r8"}
    assert all(t == f"The answer is A{i[1:]}." for i, t in replayed.items())
    others = [set(chosen(seed, policy="replay", replay_fraction=0.5)) for seed in range(1, 6)]
    assert any(other != set(picked) for other in others)  # the seed decides which are replayed


def test_slick_categories_and_default_keep():
    assert slick_category(True, [True, True]) == "HighlyKnown"
    assert slick_category(True, [True, False]) == "MaybeKnown"
    assert slick_category(False, [False, True]) == "WeaklyKnown"
    assert slick_category(False, [False, False]) == "Unknown"
    # r0-r2 HighlyKnown, r3-r5 MaybeKnown, r6 WeaklyKnown, r7-r8 Unknown
    assert set(chosen(policy="slick")) == {"r3", "r4", "r5", "r6", "r7", "r8"}
    assert set(chosen(policy="slick", slick_keep=("Unknown",))) == {"r7", "r8"}


@pytest.mark.parametrize("config, problem", [({"policy": "best"}, "unknown policy 'best'"),
                                             ({"targets": "mine"}, "unknown targets 'mine'")])
def test_an_unknown_setting_is_refused(config, problem):
    with pytest.raises(ValueError, match=problem):
        chosen(**config)
