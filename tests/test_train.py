"""Training in epochs: learned records leave, forgotten ones return, the best epoch is kept, a kill resumes."""

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from conftest import qa_rows
from slearn_mlx.artifacts import read_rows
from slearn_mlx.data import parse_record
from slearn_mlx.models import load_model
from slearn_mlx.config import TrainConfig
from slearn_mlx.train import Check, Example, epoch_batches, train_lora


DISTINCT_PAIRS = [("What is the capital of France?", "Paris"), ("Which option is red?", "red"),
                  ("Is the student answer correct?", "blue"), ("What is a Central Processing Unit?", "green"),
                  ("What is Random Access Memory?", "yellow"), ("What is a Graphics Processing Unit?", "question")]


def examples(n, known=()):
    records = [parse_record(row, "test") for row in qa_rows(n)]
    return [Example(r, r.answer, r.answer, i in known, i not in known) for i, r in enumerate(records)]


class Scripted:
    """Answers the check's records by a script (how many of them are right each epoch), remembers the
    adapter it saw each epoch, and can fail on a given call."""

    def __init__(self, model, rights, fail_on=None):
        self.model, self.rights, self.fail_on, self.seen = model, list(rights), fail_on, []

    def answer(self, records, expected, epoch):
        if len(self.seen) + 1 == self.fail_on:
            raise KeyboardInterrupt  # a kill in the middle of training
        self.seen.append({k: mx.array(v) for k, v in tree_flatten(self.model.trainable_parameters())})
        right = self.rights[len(self.seen) - 1]
        return [{"id": r.id, "response": "right" if i < right else "wrong", "correct": i < right}
                for i, r in enumerate(records)]

    def check(self):
        return Check(self.answer, lambda epoch: {"validation_accuracy": 0.5})


def train(tiny_model, folder, scores=None, fail_on=None, pairs=None, **config):
    model, tokenizer = load_model(tiny_model)
    scripted = Scripted(model, scores, fail_on) if scores else None
    facts = train_lora(model, tokenizer, pairs or examples(8), TrainConfig(batch_size=4, **config), folder,
                       scripted.check() if scripted else None)
    return facts, scripted


def adapter(folder):
    return mx.load(str(folder / "adapters.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all(mx.allclose(a[k], b[k], atol=1e-6).item() for k in a)


def test_the_best_epoch_is_kept_and_patience_stops(tiny_model, tmp_path):
    facts, check = train(tiny_model, tmp_path, scores=[4, 6, 5, 5, 7], epochs=5, patience=2, rehearsal=0.0)
    assert facts["best_epoch"] == 2 and facts["epochs_run"] == 4 and facts["objective"] == 6 / 8
    assert facts["stop"] == "no better objective in 2 epoch(s)"
    log = read_rows(tmp_path / "train_log.jsonl")
    checks = [row for row in log if row["event"] == "check"]
    assert [row["right_unknown"] for row in checks] == [[4, 8], [6, 8], [5, 8], [5, 8]]
    assert [row["kept"] for row in checks] == [True, True, False, False]
    assert checks[0]["graded"] == 8  # none said its expected answer
    # the guard measures the epochs that are kept, and only them
    assert ["validation_accuracy" in row for row in checks] == [True, True, False, False]
    epochs = [row for row in log if row["event"] == "epoch"]
    assert [row["records"] for row in epochs] == [8, 4, 2, 3]  # what was wrong at each check trains next
    assert same(adapter(tmp_path), check.seen[1])


def test_without_the_check_every_epoch_trains_the_first_selection_and_the_last_is_kept(tiny_model, tmp_path):
    pairs = examples(8, known={0, 1})
    facts, _ = train(tiny_model, tmp_path, pairs=pairs, epochs=3, check=False, learning_rate=1e-2)
    assert facts["epochs_run"] == 3 and facts["best_epoch"] == 3 and facts["objective"] is None
    log = read_rows(tmp_path / "train_log.jsonl")
    first = sorted(e.record.id for e in pairs[2:])
    assert [sorted(row["trained"]) for row in log if row["event"] == "epoch"] == [first] * 3
    assert not [row for row in log if row["event"] == "check"]


def test_learned_records_leave_and_forgotten_ones_return(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    # Questions and answers the tiny model can tell apart, from its tokenizer's corpus.
    records = [parse_record({"question": q, "answer": a}, "test") for q, a in DISTINCT_PAIRS]
    # Two records the model "knew" but does not say after the first epoch: the check must bring them back.
    # The other four are trained until the model says each; once said, a record leaves the next epoch.
    pairs = [Example(r, r.answer, r.answer, True, False) for r in records[:2]]
    pairs += [Example(r, r.answer, r.answer, False, True) for r in records[2:]]
    facts = train_lora(model, tokenizer, pairs, TrainConfig(batch_size=4, epochs=60, patience=60, learning_rate=3e-4,
                                                            lora_layers=2, rehearsal=0.0), tmp_path)
    log = read_rows(tmp_path / "train_log.jsonl")
    checks = [row for row in log if row["event"] == "check"]
    epochs = [row for row in log if row["event"] == "epoch"]
    assert checks[0]["right_known"] == [0, 2] and checks[0]["returned"] == sorted(r.id for r in records[:2])
    assert {i for row in checks for i in row["left"]} == {e.record.id for e in pairs}  # each left once said
    for check, following in zip(checks, epochs[1:]):  # every epoch trains what the check before it left in
        assert not set(following["trained"]) & set(check["left"]) and set(check["returned"]) <= set(following["trained"])
    assert facts["stop"] == "every training record answered right" and checks[-1]["right_unknown"] == [4, 4]
    assert facts["record_epochs"] == sum(row["records"] for row in epochs) < 6 * facts["epochs_run"]


def test_later_epochs_rehearse_right_records_beside_the_wrong_ones(tiny_model, tmp_path):
    train(tiny_model, tmp_path, scores=[4, 6, 5], epochs=3, patience=3, rehearsal=0.5)
    log = read_rows(tmp_path / "train_log.jsonl")
    epochs = [row for row in log if row["event"] == "epoch"]
    # 4 wrong after epoch 1 and half as many right ones again; then 2 wrong and 1 rehearsed
    assert [(row["records"], row["rehearsed"]) for row in epochs] == [(8, 0), (6, 2), (3, 1)]


def test_a_check_asks_what_the_epoch_trained_and_a_share_of_the_rest_longest_unasked_first(tiny_model, tmp_path):
    model, tokenizer = load_model(tiny_model)
    pairs = examples(8, known={0, 1, 2, 3})
    ids = [e.record.id for e in pairs]
    asked = []

    def answer(records, expected, epoch):  # 4 and 5 are never learned; everything else is right
        asked.append(sorted(ids.index(r.id) for r in records))
        return [{"id": r.id, "response": "x", "correct": ids.index(r.id) not in (4, 5)} for r in records]

    train_lora(model, tokenizer, pairs, TrainConfig(batch_size=4, epochs=3, patience=3, rehearsal=0.0, recheck=0.5),
               tmp_path, Check(answer))
    # epoch 1 trains 4-7 and asks two of the four known; later epochs train 4 and 5, and ask half of the
    # six others, those asked longest ago (never, then the first epoch) first
    assert asked == [[0, 1, 4, 5, 6, 7], [0, 2, 3, 4, 5], [1, 4, 5, 6, 7]]
    checks = [row for row in read_rows(tmp_path / "train_log.jsonl") if row["event"] == "check"]
    assert [row["asked"] for row in checks] == [6, 5, 5]
    assert all(row["right_known"] == [4, 4] and row["right_unknown"] == [2, 4] for row in checks)


def test_a_time_budget_stops_training(tiny_model, tmp_path):
    facts, _ = train(tiny_model, tmp_path, epochs=50, max_seconds=1e-6, check=False)
    assert facts["epochs_run"] < 50 and facts["stop"] == "time budget"
    log = read_rows(tmp_path / "train_log.jsonl")
    assert log[-1]["event"] == "stop" and log[-1]["reason"] == "time budget"
    assert (tmp_path / "adapters.safetensors").exists()


def test_an_interrupted_training_resumes_to_the_same_adapter(tiny_model, tmp_path):
    scores = [1, 2, 3]
    _, whole = train(tiny_model, tmp_path / "whole", scores=scores, epochs=3, patience=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model, tmp_path / "killed", scores=scores, fail_on=2, epochs=3, patience=3)
    model, tokenizer = load_model(tiny_model)
    rerun = Scripted(model, scores[1:])
    facts = train_lora(model, tokenizer, examples(8), TrainConfig(batch_size=4, epochs=3, patience=3),
                       tmp_path / "killed", rerun.check())
    assert facts["epochs_run"] == 3 and facts["best_epoch"] == 3
    # Resumed, not restarted: epoch 1 was checkpointed before the kill, so the rerun trains and checks epochs
    # 2 and 3 only, and its first check sees the adapter the uninterrupted training had after epoch 2.
    assert len(rerun.seen) == 2 and same(rerun.seen[0], whole.seen[1]) and not same(rerun.seen[0], whole.seen[0])
    epochs = [row["epoch"] for row in read_rows(tmp_path / "killed" / "train_log.jsonl") if row["event"] == "epoch"]
    assert epochs == [1, 2, 2, 3]  # epoch 2 was trained before the kill (its check was cut short) and again
    assert same(adapter(tmp_path / "killed"), adapter(tmp_path / "whole"))


def test_another_configuration_starts_over(tiny_model, tmp_path):
    train(tiny_model, tmp_path, epochs=1, check=False)
    facts, _ = train(tiny_model, tmp_path, epochs=2, learning_rate=1e-3, check=False)
    assert facts["epochs_run"] == 2


def test_records_longer_than_the_limit_are_reported_and_skipped(tiny_model, tmp_path, caplog):
    model, tokenizer = load_model(tiny_model)
    long = parse_record({"question": "Why? " * 200, "answer": "Because"}, "test")
    facts = train_lora(model, tokenizer, [*examples(4), Example(long, "Because", "Because", False, True)],
                       TrainConfig(batch_size=4, epochs=1, max_seq_length=128), tmp_path)
    assert facts["examples"] == 4 and facts["skipped_too_long"] == [long.id]
    assert f"longer than max_seq_length=128 tokens and are not trained on: {long.id}" in caplog.text


def test_batches_group_similar_lengths_and_are_drawn_from_the_seed_and_epoch():
    lengths = [5, 40, 6, 41, 7, 42, 8, 43]
    batches = epoch_batches(lengths, 4, seed=0, epoch=1)
    assert sorted(sorted(lengths[i] for i in b) for b in batches) == [[5, 6, 7, 8], [40, 41, 42, 43]]
    assert epoch_batches(lengths, 4, 0, 1) == batches  # a resumed epoch draws the same batches
    assert any(epoch_batches(lengths, 3, 0, epoch) != epoch_batches(lengths, 3, 0, 1) for epoch in range(2, 6))


def answer_kl_to_base(model, tokenizer, pairs) -> float:
    """Mean KL(base || adapted) over the answer tokens of the examples."""
    from slearn_mlx.probe import target_span
    from slearn_mlx.train import adapters_off

    total = 0.0
    for e in pairs:
        span = target_span(tokenizer, e.record, e.target)
        inputs = mx.array([span.tokens[:span.end - 1]])
        with adapters_off(model):
            base = model(inputs).astype(mx.float32)[0, span.start - 1:]
        adapted = model(inputs).astype(mx.float32)[0, span.start - 1:]
        base, adapted = base - mx.logsumexp(base, -1, keepdims=True), adapted - mx.logsumexp(adapted, -1, keepdims=True)
        total += (mx.exp(base) * (base - adapted)).sum(-1).mean().item()
    return total / len(pairs)


def test_the_kl_term_keeps_known_answers_closer_to_the_base_model(tiny_model, tmp_path):
    pairs = [Example(e.record, e.target, e.expected, i < 4, True) for i, e in enumerate(examples(8))]
    drift = {}
    for weight in (0.0, 5.0):
        model, tokenizer = load_model(tiny_model)
        train_lora(model, tokenizer, pairs, TrainConfig(batch_size=4, epochs=3, learning_rate=1e-2, kl_weight=weight,
                                                        check=False), tmp_path / str(weight))
        drift[weight] = answer_kl_to_base(model, tokenizer, pairs[:4])
    assert 0 < drift[5.0] < 0.8 * drift[0.0], drift
