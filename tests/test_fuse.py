"""fuse: the merged model computes what the base model with the adapter computes."""

import mlx.core as mx
import pytest
from click.testing import CliRunner
from mlx_lm.utils import load

from conftest import qa_rows, write_jsonl
from slearn_mlx.cli import cli
from slearn_mlx.config import resolve_config
from slearn_mlx.run import RunError, create_run
from slearn_mlx.fuse import fuse_run


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuse")
    data = write_jsonl(tmp / "data.jsonl", qa_rows(4))
    result = CliRunner().invoke(cli, ["adapt", str(data), "--model", str(tiny_model), "--out", str(tmp / "run"),
                                      "--held-out", "0", "--epochs", "2", "--batch-size", "4",
                                      "--learning-rate", "1e-2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "run"


def logits(model, tokens):
    return model(mx.array([tokens]))[0]


def test_fused_logits_equal_base_plus_adapter(trained_run, tiny_model, tmp_path):
    result = CliRunner().invoke(cli, ["fuse", str(trained_run), "--out", str(tmp_path / "fused"), "--gguf"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    adapted, tokenizer = load(str(tiny_model), adapter_path=str(trained_run / "adapter"))
    fused, _ = load(str(tmp_path / "fused"))
    base, _ = load(str(tiny_model))
    tokens = tokenizer.encode("What is the capital of France?")
    assert mx.allclose(logits(fused, tokens), logits(adapted, tokens), atol=1e-4)
    assert not mx.allclose(logits(base, tokens), logits(adapted, tokens), atol=1e-3)  # the adapter changed something

    weights, meta = mx.load(str(tmp_path / "fused" / "model-f16.gguf"), return_metadata=True)
    assert meta["general.architecture"] == "llama"
    assert mx.array_equal(weights["output_norm.weight"], fused.model.norm.weight)
    assert "byte-level BPE" in result.output  # the tiny tokenizer is byte-level: the user is told


def test_fuse_refuses_a_run_without_adapter_and_a_full_folder(trained_run, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(2))
    create_run(resolve_config(str(data), str(tiny_model)), tmp_path / "untrained")
    with pytest.raises(RunError, match="no trained adapter"):
        fuse_run(tmp_path / "untrained")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RunError, match="not empty"):
        fuse_run(trained_run, tmp_path / "full")
