"""LoRA fine-tuning on the selected records, with mlx-lm's tuner.

Loss is on the answer tokens only (the prompt is masked). Training is counted in epochs:
every selected record is seen once per epoch, however the count divides by the batch size.
When a validation function is given, it is called after every epoch and the adapter of
the best epoch is kept (not the last); training stops once `patience` epochs bring no
improvement, or when `max_seconds` of training have passed. The adapter folder is what
`mlx_lm.generate --adapter-path` loads.
"""

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx.utils import tree_flatten

from .answer import training_messages
from .artifacts import append_rows
from .data import Record


ADAPTER_FILE = "adapters.safetensors"  # the name mlx_lm.load(adapter_path=...) reads


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
    patience: int = 1  # epochs without a better validation score before stopping
    max_seconds: float | None = None  # a wall-time budget for training, for equal-budget comparisons


def lora_parameters(config: TrainConfig) -> dict:
    return {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": 0.0}


def padded_to_batches(items: list, batch_size: int, seed: int) -> list:
    """mlx-lm's batching drops the last partial batch; repeat a few items so none is ever dropped."""
    missing = -len(items) % batch_size
    return items + random.Random(seed).sample(items, missing)


class StopTraining(Exception):
    pass


def report_every(steps_per_epoch: int) -> int:
    """The largest step count up to 10 that divides an epoch, so an epoch's end is a report."""
    return max(d for d in range(1, 11) if steps_per_epoch % d == 0)


class EpochCallback:
    """mlx-lm training callback: logs losses, validates at each epoch's end, keeps the best adapter."""

    def __init__(self, model, adapter_dir: Path, steps_per_epoch: int, config: TrainConfig,
                 validate: Callable[[], float] | None):
        self.model, self.adapter_dir, self.config, self.validate = model, adapter_dir, config, validate
        self.steps_per_epoch = steps_per_epoch
        self.started = time.perf_counter()
        self.best_score, self.best_epoch, self.epochs_done = -1.0, 0, 0

    def log(self, row: dict):
        append_rows(self.adapter_dir / "train_log.jsonl", [row])

    def save(self, name: str):
        weights = dict(tree_flatten(self.model.trainable_parameters()))
        mx.save_safetensors(str(self.adapter_dir / name), weights)

    def on_train_loss_report(self, info: dict):
        self.log({"event": "train", **info})
        if info["iteration"] % self.steps_per_epoch == 0:
            self.end_of_epoch()
        if self.config.max_seconds and time.perf_counter() - self.started > self.config.max_seconds:
            self.log({"event": "stop", "reason": "time budget", "iteration": info["iteration"]})
            raise StopTraining

    def end_of_epoch(self):
        self.epochs_done += 1
        if self.validate is None:
            self.save(ADAPTER_FILE)
            return
        score = self.validate()
        self.model.train()
        self.log({"event": "validation", "epoch": self.epochs_done, "accuracy": score})
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.epochs_done
            self.save(ADAPTER_FILE)
        elif self.epochs_done - self.best_epoch >= self.config.patience:
            self.log({"event": "stop", "reason": "no better validation", "epoch": self.epochs_done})
            raise StopTraining

    def on_val_loss_report(self, info: dict):
        self.log({"event": "val_loss", **info})


def train_lora(model, tokenizer, examples: list[tuple[Record, str]], config: TrainConfig, adapter_dir: Path,
               validate: Callable[[], float] | None = None) -> dict:
    """Train LoRA adapters on (record, target answer) pairs; write the kept adapter to adapter_dir."""
    batch_size = min(config.batch_size, len(examples))
    steps_per_epoch = math.ceil(len(examples) / batch_size)

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
        iters=steps_per_epoch * config.epochs,
        steps_per_report=report_every(steps_per_epoch),
        steps_per_save=steps_per_epoch,  # mlx-lm's own checkpoint each epoch, for resuming
        max_seq_length=config.max_seq_length,
        adapter_file=str(adapter_dir / "last_adapters.safetensors"),
    )
    mx.random.seed(config.seed)
    np.random.seed(config.seed)  # mlx-lm shuffles batches with numpy's global generator
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    callback = EpochCallback(model, adapter_dir, steps_per_epoch, config, validate)
    try:
        train(model, optimizer, items, args=args, training_callback=callback)
    except StopTraining:
        pass
    if not (adapter_dir / ADAPTER_FILE).exists():  # stopped by the time budget inside the first epoch
        callback.save(ADAPTER_FILE)
    return {"examples": len(examples), "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
            "epochs_run": callback.epochs_done, "best_epoch": callback.best_epoch or callback.epochs_done,
            "best_validation_accuracy": callback.best_score if validate else None}
