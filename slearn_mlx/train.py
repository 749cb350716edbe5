"""LoRA fine-tuning on the selected records, with mlx-lm's tuner.

Loss is on the answer tokens only (the prompt is masked). Training is counted in epochs:
every selected record is seen once per epoch, however the count divides by the batch size.
When a validation function is given, it is called after every epoch and the adapter of
the best epoch is kept (not the last); training stops once `patience` epochs bring no
improvement, or when `max_seconds` of training have passed. The adapter folder is what
`mlx_lm.generate --adapter-path` loads. Under mlx.launch the ranks train data-parallel
(mlx-lm splits each batch over them and averages the gradients); rank 0 writes the files.
"""

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx.utils import tree_flatten, tree_unflatten

from . import distributed
from .answer import training_messages
from .artifacts import append_rows, read_json, write_json
from .data import Record


log = logging.getLogger("slearn_mlx")

ADAPTER_FILE = "adapters.safetensors"  # the name mlx_lm.load(adapter_path=...) reads
CHECKPOINT = "checkpoint.safetensors"  # adapter, optimizer state and progress after the last finished epoch


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8
    # 1e-4 with a replay share of 0.75 kept the most of the known and scored best on the whole set of
    # the settings measured on the default data and two shared sets (README "Choosing the defaults").
    learning_rate: float = 1e-4
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_layers: int = 16  # the last N transformer blocks get adapters, on every linear layer
    max_seq_length: int = 1024
    seed: int = 0
    # Epochs without a better validation score before stopping. 1 stopped `all` after its second
    # epoch on the default data's 40 validation records; the best epoch is kept whatever this is.
    patience: int = 2
    max_seconds: float | None = None  # a wall-time budget for training, for equal-budget comparisons
    # Weight of KL(base || adapted) over the answer tokens of the records the model already knew: a pull
    # back toward what it said before training, on the records where that was right. 0: off.
    kl_weight: float = 0.0


def lora_parameters(config: TrainConfig) -> dict:
    return {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": 0.0}


def adapter_disk_bytes(model_config: dict, config: TrainConfig) -> int:
    """Disk a training writes: best and last adapters and a checkpoint with Adam's two moments (float32).

    Counted for a llama-shaped block (attention and gated MLP on every linear layer), which is
    what most mlx-lm models are; other shapes are at the same order of magnitude.
    """
    hidden, inner = model_config["hidden_size"], model_config["intermediate_size"]
    heads = model_config["num_attention_heads"]
    head_dim = model_config.get("head_dim") or hidden // heads
    kv_heads = model_config.get("num_key_value_heads") or heads
    per_block = 2 * (hidden + heads * head_dim) + 2 * (hidden + kv_heads * head_dim) + 3 * (hidden + inner)
    blocks = min(config.lora_layers, model_config["num_hidden_layers"])
    return per_block * config.lora_rank * blocks * 4 * 5


def padded_to_batches(items: list, batch_size: int, seed: int) -> list:
    """mlx-lm's batching drops the last partial batch; repeat a few items so none is ever dropped."""
    missing = -len(items) % batch_size
    return items + random.Random(seed).sample(items, missing)


def ranks_batch_size(batch_size: int) -> int:
    """mlx-lm splits every batch evenly over the ranks: round down to a multiple of their number."""
    ranks = distributed.size()
    fitted = max(ranks, batch_size - batch_size % ranks)
    if fitted != batch_size:
        log.warning(f"batch size {batch_size} is not divisible by the {ranks} ranks; training with {fitted}")
    return fitted


def unpadded_batches(*args, known: frozenset[tuple[int, ...]] = frozenset(), **kwargs):
    """mlx-lm's batches (grouped by length, shuffled), without the padding that contributes nothing.

    mlx-lm pads every batch to one more than a multiple of 32 tokens: on short QA pairs a quarter
    of the compute. Its loss reads one position past each example (a padding target), so the cut
    keeps one column past the longest and the loss is the same as on the padded batch.
    With `known` (the token sequences of known records), a third column of `lengths` marks them:
    mlx-lm's batches do not say which records they hold, their tokens do."""
    for batch, lengths in iterate_batches(*args, **kwargs):
        batch = batch[:, : lengths[:, 1].max().item() + 1]
        if known:
            rows = batch.tolist()
            marks = [tuple(row[:n]) in known for row, n in zip(rows, lengths[:, 1].tolist())]
            lengths = mx.concatenate([lengths, mx.array(marks, dtype=lengths.dtype)[:, None]], axis=1)
        yield batch, lengths


def base_logits(model, inputs: mx.array) -> mx.array:
    """The model's logits with every LoRA adapter switched off: the base model, without a copy of it."""
    adapters = [m for m in model.modules() if hasattr(m, "lora_a")]
    scales = [m.scale for m in adapters]
    for m in adapters:
        m.scale = 0.0
    try:
        return mx.stop_gradient(model(inputs))
    finally:
        for m, scale in zip(adapters, scales):
            m.scale = scale


def loss_with_kl(kl_weight: float):
    """mlx-lm's loss (cross-entropy on the answer tokens) plus kl_weight x KL(base || adapted) on the
    answer tokens of the rows marked known by unpadded_batches."""
    def loss(model, batch, lengths):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        steps = mx.arange(1, targets.shape[1] + 1)
        answer = (steps >= lengths[:, 0:1]) & (steps <= lengths[:, 1:2])
        tokens = answer.sum()
        ce = (nn.losses.cross_entropy(logits, targets) * answer).astype(mx.float32).sum() / tokens
        base = nn.log_softmax(base_logits(model, inputs).astype(mx.float32), axis=-1)
        adapted = nn.log_softmax(logits.astype(mx.float32), axis=-1)
        kl = (mx.exp(base) * (base - adapted)).sum(axis=-1)
        known = answer & (lengths[:, 2:3] > 0)
        return ce + kl_weight * (kl * known).sum() / mx.maximum(known.sum(), 1), tokens
    return loss


class StopTraining(Exception):
    pass


class TrainingError(ValueError):
    """Training cannot run on what was selected."""


def report_every(steps_per_epoch: int) -> int:
    """The largest step count up to 10 that divides an epoch, so an epoch's end is a report."""
    return max(d for d in range(1, 11) if steps_per_epoch % d == 0)


def save_arrays(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    tmp = path.with_name("tmp-" + path.name)  # mx.save_safetensors wants the .safetensors suffix
    mx.save_safetensors(str(tmp), arrays, metadata=metadata)
    os.replace(tmp, path)


class EpochCallback:
    """mlx-lm training callback: logs losses; at each epoch's end validates, keeps the best adapter
    and writes a checkpoint (adapter, optimizer state, progress) that a killed run resumes from."""

    def __init__(self, model, optimizer, adapter_dir: Path, steps_per_epoch: int, config: TrainConfig,
                 validate: Callable[[], float] | None, progress: dict):
        self.model, self.optimizer, self.adapter_dir = model, optimizer, adapter_dir
        self.config, self.validate, self.steps_per_epoch = config, validate, steps_per_epoch
        self.epochs_done, self.best_epoch = progress["epochs_done"], progress["best_epoch"]
        self.best_score, self.stopped = progress["best_score"], progress["stopped"]
        self.started = time.perf_counter() - progress["seconds"]

    def log(self, row: dict):
        if distributed.is_main():
            append_rows(self.adapter_dir / "train_log.jsonl", [row])

    def save_adapter(self):
        if distributed.is_main():
            save_arrays(self.adapter_dir / ADAPTER_FILE, dict(tree_flatten(self.model.trainable_parameters())))

    def on_train_loss_report(self, info: dict):
        self.log({"event": "train", "epoch": self.epochs_done + 1, **info})
        if info["iteration"] % self.steps_per_epoch == 0:
            self.end_of_epoch()
        elif self.over_budget():
            self.stop("time budget")

    def over_budget(self) -> bool:
        # Ranks' clocks differ: one rank stopping alone would leave the others waiting for its gradients.
        return distributed.any_rank(bool(self.config.max_seconds) and time.perf_counter() - self.started > self.config.max_seconds)

    def stop(self, reason: str):
        self.stopped = True
        self.log({"event": "stop", "reason": reason, "epoch": self.epochs_done})
        self.checkpoint()
        raise StopTraining

    def end_of_epoch(self):
        self.epochs_done += 1
        if self.validate is None:
            self.save_adapter()
        else:
            score = self.validate()
            self.model.train()
            self.log({"event": "validation", "epoch": self.epochs_done, "accuracy": score})
            if score > self.best_score:
                self.best_score, self.best_epoch = score, self.epochs_done
                self.save_adapter()
            elif self.epochs_done - self.best_epoch >= self.config.patience:
                self.stop("no better validation")
        if self.over_budget():
            self.stop("time budget")
        self.checkpoint()

    def checkpoint(self):
        if not distributed.is_main():
            return
        arrays = {f"adapter.{k}": v for k, v in tree_flatten(self.model.trainable_parameters())}
        arrays.update({f"optimizer.{k}": v for k, v in tree_flatten(self.optimizer.state)})
        progress = {"epochs_done": self.epochs_done, "best_epoch": self.best_epoch, "best_score": self.best_score,
                    "stopped": self.stopped, "seconds": time.perf_counter() - self.started}
        # One file holds state and progress, so a kill can never leave them disagreeing.
        save_arrays(self.adapter_dir / CHECKPOINT, arrays, {"progress": json.dumps(progress)})

    def on_val_loss_report(self, info: dict):
        self.log({"event": "val_loss", **info})


def resume(model, optimizer, adapter_dir: Path, adapter_config: dict) -> dict:
    """Progress of an interrupted training of the same configuration, its state loaded; else a fresh start."""
    fresh = {"epochs_done": 0, "best_epoch": 0, "best_score": -1.0, "stopped": False, "seconds": 0.0}
    config_path = adapter_dir / "adapter_config.json"
    resumable = (adapter_dir / CHECKPOINT).exists() and read_json(config_path) == adapter_config
    distributed.barrier()  # every rank has looked before rank 0 clears the folder
    if not resumable:
        if distributed.is_main():
            shutil.rmtree(adapter_dir, ignore_errors=True)
            adapter_dir.mkdir(parents=True)
            write_json(config_path, adapter_config)
        return fresh
    state, metadata = mx.load(str(adapter_dir / CHECKPOINT), return_metadata=True)
    model.load_weights([(k[len("adapter."):], v) for k, v in state.items() if k.startswith("adapter.")], strict=False)
    optimizer.state = tree_unflatten([(k[len("optimizer."):], v) for k, v in state.items() if k.startswith("optimizer.")])
    return json.loads(metadata["progress"])


def tokenize(tokenizer, examples: list[tuple[Record, str]]) -> list[tuple[list[int], int]]:
    """(tokens, answer offset) of each (record, target) as mlx-lm trains it: chat template, prompt masked."""
    chats = [{"messages": training_messages(record, target)} for record, target in examples]
    dataset = CacheDataset(ChatDataset(chats, tokenizer, mask_prompt=True))
    return [dataset[i] for i in range(len(dataset))]


def train_lora(model, tokenizer, examples: list[tuple[Record, str]], config: TrainConfig, adapter_dir: Path,
               validate: Callable[[], float] | None = None, known: frozenset[str] = frozenset()) -> dict:
    """Train LoRA adapters on (record, target answer) pairs; write the kept adapter to adapter_dir.
    `known` are the ids of the records the base model answered right (the KL term's records).

    A folder left by an interrupted training of the same examples and configuration is resumed
    from its last finished epoch, and ends where the uninterrupted training would have.
    """
    tokenized = tokenize(tokenizer, examples)
    # mlx-lm would cut a long example silently; one cut off before its answer teaches nothing.
    too_long = [record.id for (record, _), (tokens, _) in zip(examples, tokenized) if len(tokens) > config.max_seq_length]
    if too_long:
        log.warning(f"{len(too_long)} selected records are longer than max_seq_length={config.max_seq_length} tokens "
                    f"and are not trained on: {', '.join(too_long[:5])}{', ...' if len(too_long) > 5 else ''}")
    kept = [(example, item) for example, item in zip(examples, tokenized) if len(item[0]) <= config.max_seq_length]
    if not kept:
        raise TrainingError(f"every selected record is longer than max_seq_length={config.max_seq_length} tokens")
    examples, tokenized = [e for e, _ in kept], [i for _, i in kept]

    batch_size = ranks_batch_size(min(config.batch_size, len(examples)))
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    adapter_config = {
        "fine_tune_type": "lora",
        "num_layers": config.lora_layers,
        "lora_parameters": lora_parameters(config),
        "slearn_mlx": {**asdict(config), "examples_sha256": hashlib.sha256(
            json.dumps([[r.id, target] for r, target in examples]).encode()).hexdigest()},
    }

    mx.random.seed(config.seed)  # before the LoRA layers, whose initial weights are random
    np.random.seed(config.seed)  # mlx-lm shuffles batches with numpy's global generator
    model.freeze()
    linear_to_lora_layers(model, config.lora_layers, lora_parameters(config))
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    progress = resume(model, optimizer, adapter_dir, adapter_config)
    for _ in range(progress["epochs_done"]):
        np.random.permutation(steps_per_epoch)  # replay the shuffles of the finished epochs
    callback = EpochCallback(model, optimizer, adapter_dir, steps_per_epoch, config, validate, progress)

    items = padded_to_batches(tokenized, batch_size, config.seed)
    remaining_epochs = 0 if progress["stopped"] else config.epochs - progress["epochs_done"]
    args = TrainingArgs(
        batch_size=batch_size,
        iters=steps_per_epoch * remaining_epochs,
        steps_per_report=report_every(steps_per_epoch),
        steps_per_save=steps_per_epoch * config.epochs + 1,  # our own checkpoints replace mlx-lm's
        max_seq_length=config.max_seq_length,
        adapter_file=str(adapter_dir / "last_adapters.safetensors"),
    )
    batches, loss = unpadded_batches, {}
    if config.kl_weight and known:
        known_tokens = frozenset(tuple(tokens) for (record, _), (tokens, _) in zip(examples, tokenized) if record.id in known)
        batches, loss = partial(unpadded_batches, known=known_tokens), {"loss": loss_with_kl(config.kl_weight)}
    if remaining_epochs:
        try:
            train(model, optimizer, items, args=args, training_callback=callback, iterate_batches=batches, **loss)
        except StopTraining:
            pass
    if not (adapter_dir / ADAPTER_FILE).exists():  # stopped by the time budget inside the first epoch
        callback.save_adapter()
    return {"examples": len(examples), "skipped_too_long": too_long, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
            "epochs_run": callback.epochs_done, "best_epoch": callback.best_epoch or callback.epochs_done,
            "best_validation_accuracy": callback.best_score if validate else None}
