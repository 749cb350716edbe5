"""LoRA fine-tuning on the selected records, with mlx-lm's tuner.

Loss is on the answer tokens only (the prompt is masked). Training is counted in epochs:
every selected record is seen once per epoch, however the count divides by the batch size.
The adapter folder is what `mlx_lm.generate --adapter-path` loads.
"""

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers

from .answer import training_messages
from .artifacts import append_rows
from .data import Record


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_layers: int = 16  # the last N transformer blocks get adapters, on every linear layer
    max_seq_length: int = 1024
    seed: int = 0


def lora_parameters(config: TrainConfig) -> dict:
    return {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": 0.0}


def padded_to_batches(items: list, batch_size: int, seed: int) -> list:
    """mlx-lm's batching drops the last partial batch; repeat a few items so none is ever dropped."""
    missing = -len(items) % batch_size
    return items + random.Random(seed).sample(items, missing)


class LossLog:
    """mlx-lm training callback that keeps the losses in the run folder."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_loss_report(self, info: dict):
        append_rows(self.path, [{"event": "train", **info}])

    def on_val_loss_report(self, info: dict):
        append_rows(self.path, [{"event": "val", **info}])


def train_lora(model, tokenizer, examples: list[tuple[Record, str]], config: TrainConfig, adapter_dir: Path) -> dict:
    """Train LoRA adapters on (record, target answer) pairs; write them to adapter_dir."""
    batch_size = min(config.batch_size, len(examples))
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    iters = steps_per_epoch * config.epochs

    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora",
        "num_layers": config.lora_layers,
        "lora_parameters": lora_parameters(config),
        "slearn_mlx": asdict(config),
    }, indent=2))

    model.freeze()
    linear_to_lora_layers(model, config.lora_layers, lora_parameters(config))
    chats = [{"messages": training_messages(record, target)} for record, target in examples]
    dataset = CacheDataset(ChatDataset(chats, tokenizer, mask_prompt=True))
    items = padded_to_batches([dataset[i] for i in range(len(dataset))], batch_size, config.seed)

    args = TrainingArgs(
        batch_size=batch_size,
        iters=iters,
        steps_per_report=max(1, min(10, steps_per_epoch)),
        steps_per_save=steps_per_epoch,  # a checkpoint each epoch
        max_seq_length=config.max_seq_length,
        adapter_file=str(adapter_dir / "adapters.safetensors"),
    )
    mx.random.seed(config.seed)
    np.random.seed(config.seed)  # mlx-lm shuffles batches with numpy's global generator
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    train(model, optimizer, items, args=args, training_callback=LossLog(adapter_dir / "train_log.jsonl"))
    return {"examples": len(examples), "batch_size": batch_size, "iterations": iters, "epochs": config.epochs}
