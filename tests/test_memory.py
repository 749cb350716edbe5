"""The memory estimate counts the weights as mlx-lm quantizes them."""

import json

from mlx.utils import tree_flatten
from mlx_lm import convert
from mlx_lm.utils import load

from slearn_mlx.memory import BITS, GROUP_SIZE, quantized_weight_bytes


def test_weights_are_counted_as_mlx_lm_convert_quantizes_them(tiny_model, tmp_path):
    convert(str(tiny_model), str(tmp_path / "4bit"), quantize=True, q_group_size=GROUP_SIZE, q_bits=BITS,
            dtype="bfloat16")
    quantized, _ = load(str(tmp_path / "4bit"))
    parameters, weight_bytes = quantized_weight_bytes(json.loads((tiny_model / "config.json").read_text()))
    assert weight_bytes == sum(p.nbytes for _, p in tree_flatten(quantized.parameters()))
    assert parameters == sum(p.size for _, p in tree_flatten(load(str(tiny_model))[0].parameters()))
