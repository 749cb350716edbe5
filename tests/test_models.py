import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import load, quantize_model, save_config, save_model

from conftest import qa_rows, write_jsonl
from slearn_mlx import models
from slearn_mlx.config import resolve_config
from slearn_mlx.run import create_run
from slearn_mlx.models import ModelError, load_model, lora_parameter_count, models_dir, resolve_model


def test_a_model_folder_resolves_to_itself(tiny_model):
    assert resolve_model(str(tiny_model)) == tiny_model


def test_a_name_in_the_store_resolves(tiny_model):
    shutil.copytree(tiny_model, models_dir() / "tiny")
    assert resolve_model("tiny") == models_dir() / "tiny"


@pytest.mark.parametrize("spec, message", [
    ("no/such-repo", "no/such-repo: not in the Hugging Face cache and the hub is not reachable"),
    ("missing.gguf", "missing.gguf: no such GGUF file"),
    ("just-a-word", "just-a-word: not a model folder, a .gguf file, a name in"),
])
def test_unresolvable_models_get_one_clear_line(spec, message):
    with pytest.raises(ModelError) as error:
        resolve_model(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_folder_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="not an MLX model folder"):
        resolve_model(str(tmp_path))


def test_quantized_weights_become_float32_on_the_cpu(tiny_model, tmp_path):
    model, tokenizer, config = load(str(tiny_model), return_config=True)
    model, config = quantize_model(model, config, group_size=32, bits=4)
    save_model(tmp_path, model)
    save_config(config, tmp_path / "config.json")
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(tiny_model / name, tmp_path / name)

    loaded, _ = load_model(tmp_path)
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in loaded.named_modules())
    assert {p.dtype for _, p in tree_flatten(loaded.parameters())} == {mx.float32}
    quantized, _ = load(str(tmp_path))
    tokens = mx.array([[1, 5, 9, 20]])
    assert mx.allclose(loaded(tokens), quantized(tokens).astype(mx.float32), atol=1e-3).item()


def test_a_model_type_mlx_lm_cannot_build_is_refused_before_the_run_starts(tiny_model, tmp_path):
    folder = tmp_path / "unknown"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no_such_architecture"}))
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(2))
    with pytest.raises(ModelError, match="model type 'no_such_architecture': mlx-lm .* has no such architecture"):
        create_run(resolve_config(str(data), str(folder)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_architecture_lora_adapts_nothing_in_is_refused_naming_it(monkeypatch):
    class NormsOnly(nn.Module):  # blocks without one linear layer
        def __init__(self):
            super().__init__()
            self.layers = [nn.RMSNorm(8)]

    monkeypatch.setattr(models, "architecture", lambda config: NormsOnly())
    with pytest.raises(ModelError, match="model type 'norms_only': mlx-lm's LoRA finds no layer to adapt"):
        lora_parameter_count({"model_type": "norms_only"}, 16, 8)

