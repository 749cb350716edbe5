"""benchmarks.peers: says what is missing and stops without torch; with it, both sides compute the same loss,
and the model torch trains on every record is the one slearn-mlx then evaluates."""

import pytest

from benchmarks import peers


def test_without_the_peers_it_says_so_and_measures_nothing(monkeypatch, capsys):
    monkeypatch.setattr(peers, "find_spec", lambda name: None if name == "torch" else object())
    monkeypatch.setattr(peers, "prepare", lambda *a: pytest.fail("prepared work without torch"))
    peers.main([])
    assert "torch not installed, nothing measured" in capsys.readouterr().out


def test_torch_trains_from_the_loss_mlx_computes_on_the_same_weights(tiny_model):
    pytest.importorskip("peft")
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    from slearn_mlx.models import load_model

    examples = [([1, 5, 9, 14, 20, 33, 2], 3), ([1, 7, 8, 2], 2), ([1, 40, 41, 42, 43, 44, 45, 46, 2], 5)] * 3
    batch, lengths = peers.first_batch(examples)
    model, _ = load_model(tiny_model)
    expected = default_loss(model, mx.array(batch), mx.array(lengths))[0].item()
    result = peers.torch_train(tiny_model, {"train": examples}, threads=1)
    assert result["first_loss"] == pytest.approx(expected, rel=1e-4)
    assert result["per_second"] > 0


def test_torch_trained_on_every_record_is_saved_as_a_model_slearn_mlx_evaluates_as_torch_computes_it(tiny_model, tmp_path):
    pytest.importorskip("peft")
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from slearn_mlx.models import load_model

    examples = [([1, 5, 9, 14, 20, 33, 2], 3), ([1, 7, 8, 2], 2), ([1, 40, 41, 42, 43, 44, 45, 46, 2], 5)] * 3
    out = tmp_path / "torch-adapted"
    assert peers.torch_train_all(tiny_model, {"train": examples, "epochs": 2, "out": str(out)}, threads=1)["seconds"] > 0
    tokens = [[1, 5, 9, 14, 20, 33]]
    ours = np.asarray(load_model(out)[0](mx.array(tokens)))
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(input_ids=torch.tensor(tokens)).logits.numpy()
    assert np.allclose(ours, theirs, atol=1e-4)
    assert not np.array_equal(ours, np.asarray(load_model(tiny_model)[0](mx.array(tokens))))  # trained
