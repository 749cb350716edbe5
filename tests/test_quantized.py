"""The path a Mac runs, on this CPU: a 4-bit model kept quantized (SLEARN_MLX_KEEP_QUANTIZED=1), so
training is QLoRA, answering runs quantized kernels and fuse merges into quantized weights."""

import mlx.core as mx
import mlx.nn as nn
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten
from mlx_lm import convert
from mlx_lm.utils import load

from conftest import TINY_CONFIG, build_model, build_tokenizer, one_at_a_time, qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json, read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import Record
from slearn_mlx.forward import plan
from slearn_mlx.models import KEEP_QUANTIZED_ENV, load_model


@pytest.fixture(scope="module")
def tiny_4bit(tmp_path_factory):
    """The tiny llama as mlx-community makes its checkpoints: mlx_lm convert -q, bfloat16 (groups of 32
    divide its 64 and 128 wide matrices); embeddings shrunk so that its answers depend on the blocks,
    and so on how the weights are computed (see build_model)."""
    tmp = tmp_path_factory.mktemp("quantized")
    source = tmp / "tiny"
    source.mkdir()
    build_model(source, TINY_CONFIG, build_tokenizer(source), ["<|im_end|>"], embedding_scale=0.25)
    convert(str(source), str(tmp / "tiny-4bit"), quantize=True, q_group_size=32, q_bits=4, dtype="bfloat16")
    return tmp / "tiny-4bit"


@pytest.fixture(scope="module")
def qlora_run(tiny_4bit, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    data = write_jsonl(tmp / "data.jsonl", qa_rows(12))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEEP_QUANTIZED_ENV, "1")
        result = CliRunner().invoke(cli, ["adapt", str(data), "--model", str(tiny_4bit), "--out", str(tmp / "run"),
                                          "--held-out", "0", "--epochs", "1", "--batch-size", "4",
                                          "--learning-rate", "1e-2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "run"


def quantized_layers(model) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]


def test_a_cpu_keeps_the_weights_as_stored_only_when_asked(tiny_4bit, monkeypatch):
    kept, _ = load_model(tiny_4bit)
    assert not quantized_layers(kept)  # the default: float32 through BLAS
    monkeypatch.setenv(KEEP_QUANTIZED_ENV, "1")
    kept, _ = load_model(tiny_4bit)
    stored, _ = load(str(tiny_4bit))
    assert quantized_layers(kept) == quantized_layers(stored) and len(quantized_layers(kept)) == 15  # 7 a block, embeddings
    assert {p.dtype for _, p in tree_flatten(kept.parameters()) if mx.issubdtype(p.dtype, mx.floating)} == {mx.bfloat16}
    forward = plan(kept)  # in bfloat16 too, training's shortcuts give the model's own logits
    assert forward.head is not None and forward.share_prefix


def test_the_run_records_that_it_kept_the_weights_quantized(qlora_run):
    assert read_json(qlora_run / "versions.json")["cpu_float32_dequantized"] is False


def test_quantized_answers_are_mlx_lms_before_and_after_qlora(qlora_run, tiny_4bit):
    records = {row["id"]: Record(**row) for row in read_rows(qlora_run / "records.jsonl") if row.pop("split")}
    base, tokenizer = load(str(tiny_4bit))
    adapted, _ = load(str(tiny_4bit), adapter_path=str(qlora_run / "adapter"))
    before = {row["id"]: row["response"] for row in read_rows(qlora_run / "diagnosis.jsonl")}
    after = {row["id"]: row["response"] for row in read_rows(qlora_run / "evaluation.jsonl")}
    assert before == {i: one_at_a_time(base, tokenizer, r) for i, r in records.items()}
    assert after == {i: one_at_a_time(adapted, tokenizer, r) for i, r in records.items()}
    assert after != before  # QLoRA changed what the model says
    dequantized, _ = load_model(tiny_4bit)
    # the comparison tells the quantized path from the dequantized float32 one
    assert before != {i: one_at_a_time(dequantized, tokenizer, r) for i, r in records.items()}


def test_fuse_merges_the_qlora_adapter_into_dequantized_weights(qlora_run, tiny_4bit, tmp_path):
    result = CliRunner().invoke(cli, ["fuse", str(qlora_run), "--out", str(tmp_path / "fused")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fused, tokenizer = load(str(tmp_path / "fused"))
    adapted, _ = load(str(tiny_4bit), adapter_path=str(qlora_run / "adapter"))
    assert not quantized_layers(fused)
    base, _ = load(str(tiny_4bit))
    tokens = mx.array([tokenizer.encode("What is the capital of France?")])
    expected = adapted(tokens).astype(mx.float32)

    def distance(model) -> float:
        return mx.abs(model(tokens).astype(mx.float32) - expected).max().item()

    # bfloat16 keeps 8 bits of mantissa: the fused weights round apart from weight and LoRA computed
    # separately (0.018 here), while the adapter itself moves the logits by more than 1.
    assert distance(fused) < 0.05 < distance(base)
