"""Training that stops well: the best epoch's adapter is kept, patience and time budget stop it."""

import mlx.core as mx
import pytest

from conftest import qa_rows
from slearn_mlx.artifacts import read_rows
from slearn_mlx.data import parse_record
from slearn_mlx.models import load_model
from slearn_mlx.train import TrainConfig, train_lora


def examples(n):
    return [(parse_record(row, "test"), row["answer"]) for row in qa_rows(n)]


def run(tiny_model, tmp_path, scores=None, **config):
    model, tokenizer = load_model(tiny_model)
    script = iter(scores or [])
    validate = (lambda: next(script)) if scores else None
    facts = train_lora(model, tokenizer, examples(8), TrainConfig(batch_size=4, **config), tmp_path, validate)
    return facts, read_rows(tmp_path / "train_log.jsonl")


def test_the_best_epoch_is_kept_and_patience_stops(tiny_model, tmp_path):
    facts, log = run(tiny_model, tmp_path, scores=[0.5, 0.7, 0.6, 0.9], epochs=4, patience=1)
    assert facts["best_epoch"] == 2 and facts["epochs_run"] == 3 and facts["best_validation_accuracy"] == 0.7
    assert [row["accuracy"] for row in log if row["event"] == "validation"] == [0.5, 0.7, 0.6]
    kept = mx.load(str(tmp_path / "adapters.safetensors"))
    epoch_2 = mx.load(str(tmp_path / "0000004_adapters.safetensors"))  # mlx-lm's checkpoint after 2 x 2 steps
    assert kept.keys() == epoch_2.keys()
    assert all(mx.array_equal(kept[k], epoch_2[k]).item() for k in kept)


def test_without_validation_every_epoch_runs_and_the_last_is_kept(tiny_model, tmp_path):
    facts, _ = run(tiny_model, tmp_path, epochs=2)
    assert facts["epochs_run"] == 2 and facts["best_validation_accuracy"] is None
    last = mx.load(str(tmp_path / "last_adapters.safetensors"))
    kept = mx.load(str(tmp_path / "adapters.safetensors"))
    assert all(mx.array_equal(kept[k], last[k]).item() for k in kept)


def test_a_time_budget_stops_training(tiny_model, tmp_path):
    facts, log = run(tiny_model, tmp_path, epochs=50, max_seconds=1e-6)
    assert facts["epochs_run"] < 50
    assert log[-1]["event"] == "stop" and log[-1]["reason"] == "time budget"
    assert (tmp_path / "adapters.safetensors").exists()
