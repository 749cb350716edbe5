"""Training that stops well and resumes: best epoch kept, patience and time budget, resume after a kill."""

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from conftest import qa_rows
from slearn_mlx.artifacts import read_rows
from slearn_mlx.data import parse_record
from slearn_mlx.models import load_model
from slearn_mlx.train import TrainConfig, train_lora


def examples(n):
    return [(parse_record(row, "test"), row["answer"]) for row in qa_rows(n)]


class Validation:
    """Plays a script of scores, remembers the adapter it saw each epoch, and can fail on a given call."""

    def __init__(self, model, scores, fail_on=None):
        self.model, self.scores, self.fail_on, self.seen = model, list(scores), fail_on, []

    def __call__(self):
        if len(self.seen) + 1 == self.fail_on:
            raise KeyboardInterrupt  # a kill in the middle of training
        self.seen.append({k: mx.array(v) for k, v in tree_flatten(self.model.trainable_parameters())})
        return self.scores[len(self.seen) - 1]


def train(tiny_model, folder, scores=None, fail_on=None, **config):
    model, tokenizer = load_model(tiny_model)
    validation = Validation(model, scores, fail_on) if scores else None
    facts = train_lora(model, tokenizer, examples(8), TrainConfig(batch_size=4, **config), folder, validation)
    return facts, validation


def adapter(folder):
    return mx.load(str(folder / "adapters.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all(mx.allclose(a[k], b[k], atol=1e-6).item() for k in a)


def test_the_best_epoch_is_kept_and_patience_stops(tiny_model, tmp_path):
    facts, validation = train(tiny_model, tmp_path, scores=[0.5, 0.7, 0.6, 0.9], epochs=4, patience=1)
    assert facts["best_epoch"] == 2 and facts["epochs_run"] == 3 and facts["best_validation_accuracy"] == 0.7
    log = read_rows(tmp_path / "train_log.jsonl")
    assert [row["accuracy"] for row in log if row["event"] == "validation"] == [0.5, 0.7, 0.6]
    assert same(adapter(tmp_path), validation.seen[1])


def test_without_validation_every_epoch_runs_and_the_last_is_kept(tiny_model, tmp_path):
    facts, _ = train(tiny_model, tmp_path, epochs=2)
    assert facts["epochs_run"] == 2 and facts["best_validation_accuracy"] is None
    assert same(adapter(tmp_path), mx.load(str(tmp_path / "last_adapters.safetensors")))


def test_a_time_budget_stops_training(tiny_model, tmp_path):
    facts, _ = train(tiny_model, tmp_path, epochs=50, max_seconds=1e-6)
    assert facts["epochs_run"] < 50
    log = read_rows(tmp_path / "train_log.jsonl")
    assert log[-1]["event"] == "stop" and log[-1]["reason"] == "time budget"
    assert (tmp_path / "adapters.safetensors").exists()


def test_an_interrupted_training_resumes_to_the_same_adapter(tiny_model, tmp_path):
    scores = [0.1, 0.2, 0.3]
    train(tiny_model, tmp_path / "whole", scores=scores, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model, tmp_path / "killed", scores=scores, fail_on=2, epochs=3)
    model, tokenizer = load_model(tiny_model)
    # the rerun sees the validation of epochs 2 and 3 only: epoch 1 was checkpointed before the kill
    facts = train_lora(model, tokenizer, examples(8), TrainConfig(batch_size=4, epochs=3), tmp_path / "killed",
                       Validation(model, scores[1:]))
    assert facts["epochs_run"] == 3 and facts["best_epoch"] == 3
    assert same(adapter(tmp_path / "killed"), adapter(tmp_path / "whole"))


def test_another_configuration_starts_over(tiny_model, tmp_path):
    train(tiny_model, tmp_path, epochs=1)
    facts, _ = train(tiny_model, tmp_path, epochs=2, learning_rate=1e-3)
    assert facts["epochs_run"] == 2


def test_records_longer_than_the_limit_are_reported_and_skipped(tiny_model, tmp_path, caplog):
    model, tokenizer = load_model(tiny_model)
    long = parse_record({"question": "Why? " * 200, "answer": "Because"}, "test")
    facts = train_lora(model, tokenizer, [*examples(4), (long, "Because")],
                       TrainConfig(batch_size=4, epochs=1, max_seq_length=128), tmp_path)
    assert facts["examples"] == 4 and facts["skipped_too_long"] == [long.id]
    assert f"longer than max_seq_length=128 tokens and are not trained on: {long.id}" in caplog.text


def test_batches_without_padding_have_the_loss_of_mlx_lms_padded_ones(tiny_model):
    from mlx_lm.tuner.trainer import default_loss, iterate_batches

    from slearn_mlx.train import tokenize, unpadded_batches

    model, tokenizer = load_model(tiny_model)
    dataset = tokenize(tokenizer, examples(6))
    padded = list(iterate_batches(dataset, 3, 1024, seed=1))
    cut = list(unpadded_batches(dataset, 3, 1024, seed=1))
    assert len(cut) == len(padded) == 2
    for (full, lengths), (short, _) in zip(padded, cut):
        assert short.shape[1] < full.shape[1]
        assert (full[:, short.shape[1]:] == 0).all()  # only padding was cut
        full_loss, full_tokens = default_loss(model, full, lengths)
        short_loss, short_tokens = default_loss(model, short, lengths)
        assert short_tokens.item() == full_tokens.item()
        assert abs(short_loss.item() - full_loss.item()) < 1e-5


def answer_kl_to_base(model, tokenizer, pairs) -> float:
    """Mean KL(base || adapted) over the answer tokens of (record, target) pairs."""
    from slearn_mlx.train import base_logits, tokenize

    total = 0.0
    for tokens, offset in tokenize(tokenizer, pairs):
        inputs = mx.array([tokens[:-1]])
        base = base_logits(model, inputs).astype(mx.float32)[0, offset - 1:]
        adapted = model(inputs).astype(mx.float32)[0, offset - 1:]
        base, adapted = base - mx.logsumexp(base, -1, keepdims=True), adapted - mx.logsumexp(adapted, -1, keepdims=True)
        total += (mx.exp(base) * (base - adapted)).sum(-1).mean().item()
    return total / len(pairs)


def test_the_kl_term_keeps_known_answers_closer_to_the_base_model(tiny_model, tmp_path):
    pairs = examples(8)
    known = frozenset(r.id for r, _ in pairs[:4])
    drift = {}
    for weight in (0.0, 5.0):
        model, tokenizer = load_model(tiny_model)
        train_lora(model, tokenizer, pairs, TrainConfig(batch_size=4, epochs=3, learning_rate=1e-2, kl_weight=weight),
                   tmp_path / str(weight), known=known)
        drift[weight] = answer_kl_to_base(model, tokenizer, pairs[:4])
    assert 0 < drift[5.0] < 0.8 * drift[0.0], drift  # measured: 0.60 against 0.93


def test_batches_mark_the_known_records_by_their_tokens(tiny_model):
    from slearn_mlx.train import tokenize, unpadded_batches

    _, tokenizer = load_model(tiny_model)
    dataset = tokenize(tokenizer, examples(6))
    known = frozenset(tuple(dataset[i][0]) for i in (0, 3))
    marked = []
    for batch, lengths in unpadded_batches(dataset, 3, 1024, seed=1, known=known):
        marked += [(tuple(row[:n]) in known) == bool(mark)
                   for row, (_, n, mark) in zip(batch.tolist(), lengths.tolist())] + [bool(m) for m in lengths[:, 2].tolist()]
    assert sum(marked) == 6 + 2  # every row's mark agrees with its tokens, and two rows are marked
