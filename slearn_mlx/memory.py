"""The memory a default run needs on a Mac, computed from a model's config.json (not measured).

    python -m slearn_mlx.memory path/to/config.json [...]

Four parts, each from the model's shapes:
- the weights as mlx-community stores a 4-bit model: mlx-lm's own quantization (groups of 64, bfloat16
  scales and biases) applied to the architecture mlx-lm builds from the config, bytes counted from
  the shapes (no weight is computed);
- the LoRA adapters of training with their gradients and Adam's two moments, float32;
- training's activations kept for the backward pass, in the blocks that have adapters (the
  gradient stops below the lowest one), for a batch of the default size at a given sequence length:
  per token, the block's inputs, normed inputs, queries, keys, values, attention output, the four
  gated-MLP vectors, and the attention probabilities in float32 (taken to be materialised for the
  backward pass); plus float32 logits and their gradient at the answer positions only (forward.py);
  times TRAINING_PEAK_PER_COUNT, what a real step's peak was above these counts on a CPU;
- the caches of an answering batch of MAX_ANSWER_BATCH records at 256 positions (mlx-lm grows caches
  in steps of 256), times MEMORY_PER_KV, the growth of peak memory per record measured on a CPU.

Training and answering take turns (the check after each epoch answers), so the peak is the weights,
the LoRA state and the larger of the two. For transformer blocks of attention and a gated MLP.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .answer import MAX_ANSWER_BATCH, MEMORY_PER_KV
from .prompts import MAX_NEW_TOKENS
from .models import architecture, lora_parameter_count
from .config import TrainConfig

GROUP_SIZE, BITS = 64, 4  # mlx_lm convert -q's defaults, which mlx-community's 4-bit models use
COMPUTE_BYTES = 2  # bfloat16: the dtype those models store and run in
FLOAT32 = 4
# One LoRA step (16 blocks, rank 8, batch 8, 32 answer tokens a row, no shared prefix) of SmolLM2-135M in
# float32 on a 2-core Linux CPU peaked 1.28x above what these counts give at 128 tokens a row (1,063 MB
# against 830 MB) and 1.16x at 512 (4,572 MB against 3,926 MB): temporaries the counts leave out.
TRAINING_PEAK_PER_COUNT = 1.3


@dataclass
class MemoryNeed:
    parameters: int
    weights: int
    lora_state: int
    training: int
    answering: int

    @property
    def peak(self) -> int:
        return self.weights + self.lora_state + max(self.training, self.answering)


def quantized_weight_bytes(model_config: dict) -> tuple[int, int]:
    """(parameters, bytes) of the model quantized as mlx_lm convert -q quantizes it."""
    model = architecture(model_config)
    parameters = sum(p.size for _, p in tree_flatten(model.parameters()))
    model.set_dtype(mx.bfloat16)
    nn.quantize(model, GROUP_SIZE, BITS,
                class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % GROUP_SIZE == 0)
    return parameters, sum(p.nbytes for _, p in tree_flatten(model.parameters()))


def memory_need(model_config: dict, sequence_length: int, train: TrainConfig = TrainConfig()) -> MemoryNeed:
    args = architecture(model_config).args
    hidden, layers, inner = args.hidden_size, args.num_hidden_layers, args.intermediate_size
    heads = args.num_attention_heads
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    head_dim = getattr(args, "head_dim", None) or hidden // heads
    vocab = args.vocab_size

    parameters, weights = quantized_weight_bytes(model_config)
    lora_state = lora_parameter_count(model_config, train.lora_layers, train.lora_rank) * FLOAT32 * 4

    per_token = COMPUTE_BYTES * (4 * hidden + 2 * heads * head_dim + 2 * kv_heads * head_dim + 4 * inner) \
        + FLOAT32 * heads * sequence_length
    tokens = train.batch_size * sequence_length
    answer_logits = train.batch_size * MAX_NEW_TOKENS["short"] * vocab * FLOAT32 * 2
    training = int(TRAINING_PEAK_PER_COUNT * (per_token * tokens * min(train.lora_layers, layers) + answer_logits))

    cache_per_record = layers * 2 * kv_heads * head_dim * 256 * COMPUTE_BYTES
    answering = int(MAX_ANSWER_BATCH * MEMORY_PER_KV * cache_per_record)
    return MemoryNeed(parameters, weights, lora_state, training, answering)


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main(paths: list[str]) -> None:
    """One row per config.json: typical QA examples (128 tokens) and examples at the length cap."""
    cap = TrainConfig().max_seq_length
    print(f"| model | parameters | 4-bit weights | LoRA + Adam | training, 128 tokens | training, {cap} tokens "
          f"| answering {MAX_ANSWER_BATCH} records | peak, 128 tokens | peak, {cap} tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        config = json.loads(Path(path).read_text())
        typical, longest = memory_need(config, 128), memory_need(config, cap)
        print(f"| {Path(path).parent.name or path} | {typical.parameters / 1e9:.2f} B | {megabytes(typical.weights)} "
              f"| {megabytes(typical.lora_state)} | {megabytes(typical.training)} | {megabytes(longest.training)} | {megabytes(typical.answering)} "
              f"| {megabytes(typical.peak)} | {megabytes(longest.peak)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
