import shutil

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import load, quantize_model, save_config, save_model

from slearn_mlx.models import ModelError, load_model, models_dir, resolve_model


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
