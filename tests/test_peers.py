"""benchmarks.peers: says what is missing and stops without torch; with it, both sides compute the same loss,
and the model torch trains on every record is the one slearn-mlx then evaluates."""

import pytest

from benchmarks import peers


def test_without_the_peers_it_says_so_and_measures_nothing(monkeypatch, capsys):
    monkeypatch.setattr(peers, "find_spec", lambda name: None if name == "torch" else object())
    monkeypatch.setattr(peers, "prepare", lambda *a: pytest.fail("prepared work without torch"))
    peers.main([])
    assert "torch not installed, nothing measured" in capsys.readouterr().out


EXAMPLES = [([1, 5, 9, 14, 20, 33, 2], 3), ([1, 7, 8, 2], 2), ([1, 40, 41, 42, 43, 44, 45, 46, 2], 5)] * 3


def fixed_time(monkeypatch, seconds: float) -> None:
    """Every timed work takes `seconds`, so that what a rate counts is seen apart from the machine's speed."""
    monkeypatch.setattr(peers, "timed", lambda work: (work(), seconds))


def test_torch_trains_from_the_loss_mlx_computes_on_the_same_weights(tiny_model, monkeypatch):
    pytest.importorskip("peft")
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    from slearn_mlx.models import load_model

    batch, lengths = peers.first_batch(EXAMPLES)
    model, _ = load_model(tiny_model)
    expected = default_loss(model, mx.array(batch), mx.array(lengths))[0].item()
    fixed_time(monkeypatch, 2.0)
    result = peers.torch_train(tiny_model, {"train": EXAMPLES}, threads=1)
    assert result["first_loss"] == pytest.approx(expected, rel=1e-4)
    assert result["per_second"] == sum(len(tokens) for tokens, _ in EXAMPLES) / 2.0  # every token of the epoch


def test_torch_trained_on_every_record_is_saved_as_a_model_slearn_mlx_evaluates_as_torch_computes_it(tiny_model, tmp_path,
                                                                                                   monkeypatch):
    pytest.importorskip("peft")
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from slearn_mlx.models import load_model

    out = tmp_path / "torch-adapted"
    epochs = []
    train_epoch = peers.torch_epoch
    monkeypatch.setattr(peers, "torch_epoch", lambda model, optimizer, batches: epochs.append(sorted(map(str, batches)))
                        or train_epoch(model, optimizer, batches))
    peers.torch_train_all(tiny_model, {"train": EXAMPLES, "epochs": 2, "out": str(out)}, threads=1)
    every_batch = sorted(map(str, peers.length_batches(EXAMPLES)))
    assert epochs == [every_batch, every_batch]  # two epochs over every record
    tokens = [[1, 5, 9, 14, 20, 33]]
    ours = np.asarray(load_model(out)[0](mx.array(tokens)))
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(input_ids=torch.tensor(tokens)).logits.numpy()
    assert np.allclose(ours, theirs, atol=1e-4)
    assert not np.array_equal(ours, np.asarray(load_model(tiny_model)[0](mx.array(tokens))))  # trained
