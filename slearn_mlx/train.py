"""LoRA training in epochs that change what they train on.

Each epoch trains on the records the model does not answer right yet. After it, a check of every
training record, known and unknown alike: the model answers it greedily (with its expected answer, its
target or what it said right before, as a draft where drafts pay: decode.py). An answer said word for
word as expected is right; any other is graded (`graded_check`, which the loop passes in with the run's
grader), since a rewording can be right too, and a right rewording becomes what the next check expects.
Right records leave the next epoch and wrong ones, known records forgotten included, come back in:
later epochs train on what is still missing, which is where the time goes down. A few hard records
alone pull the model away from everything else (on the default data, one such epoch lost a third of
what was right), so each later epoch also rehearses a sample of right records, `rehearsal` of them
per wrong one, drawn anew each epoch. The share of
training records answered right is the objective: the adapter of the best epoch is kept, and
training stops when every record is right or after `patience` epochs without a better objective.
With `check=False`, every epoch trains on the first selection and the last epoch is kept: the
paper's rule.

The loop is our own because mlx-lm's trainer counts iterations over a fixed dataset: length-grouped
batches drawn anew each epoch from the seed, one Adam step per batch, gradients averaged over the
ranks of mlx.launch by their share of the tokens, and a checkpoint at each epoch's end from which an
interrupted training resumes to the same adapter. mlx-lm provides the model, the LoRA layers and the
chat template; forward.py the cheaper forward pass.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.nn.utils import average_gradients
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from mlx_lm.tuner.utils import linear_to_lora_layers

from . import distributed
from .artifacts import append_rows, read_json, write_json
from .config import TrainConfig
from .data import Record
from .answer import generate
from .forward import Plan, answer_logits, pack, plan
from .grade import Grader
from .models import lora_parameter_count
from .probe import target_span
from .progress import epoch_line
from .resumable_rows import graded, rows_for

log = logging.getLogger("slearn_mlx")

ADAPTER_FILE = "adapters.safetensors"  # the name mlx_lm.load(adapter_path=...) reads
CHECKPOINT = "checkpoint.safetensors"  # adapter, optimizer state and progress after the last finished epoch


@dataclass
class Example:
    record: Record
    target: str  # what it is trained to say
    expected: str  # a right answer the check listens for first: the target, or for a known record its own answer
    known: bool  # answered right in the diagnosis
    selected: bool  # trained in the first epoch


# The check's answers to records with the model in training, each drafted by its expected answer (the
# text, and the tokens the model said it in when known): rows {id, response, tokens, correct}.
CheckAnswers = Callable[[list[Record], list[tuple[str, list[int] | None]], int], list[dict]]


@dataclass
class Check:
    """What training asks after each epoch: `answer` the training records; `guard(epoch)`, for an epoch
    that is kept, anything else worth measuring with its adapter (graded_check's validation guard)."""
    answer: CheckAnswers
    guard: Callable[[int], dict] | None = None


def word_for_word(model, tokenizer) -> CheckAnswers:
    """The check without a grader: right is the expected answer, word for word."""
    def answer(records: list[Record], expected: list[tuple[str, list[int] | None]], epoch: int) -> list[dict]:
        said = generate(model, tokenizer, records, drafts=[tokens or text for text, tokens in expected])
        return [{"id": r.id, "response": text, "tokens": tokens, "correct": text == wanted, "grader": "word for word"}
                for r, (text, tokens), (wanted, _) in zip(records, said, expected)]
    return answer


def graded_check(model, tokenizer, grade: Grader, validation: list[Record], drafts: dict[str, str | None],
                 batch_size: int, adapter_dir: Path) -> Check:
    """The check of a run (the loop passes it in, with the run's grader and validation records): the training
    records answered, an answer that is not the one expected word for word graded; and for the epochs that
    are kept, the validation records, never trained on, answered (drafted by `drafts`, the base model's
    answers) and graded as a guard for the report. The ranks share the answering like the diagnosis's,
    through a file per epoch in the adapter folder, which also lets a check cut short by a kill resume: the
    epoch is trained again to the same weights from its start."""
    said = word_for_word(model, tokenizer)

    def rows(records: list[Record], epoch: int, scorer) -> list[dict]:
        return rows_for(records, adapter_dir / f"check-epoch{epoch}.jsonl", batch_size, f"check epoch {epoch}",
                        scorer)

    def answer(records: list[Record], expected: list[tuple[str, list[int] | None]], epoch: int) -> list[dict]:
        expected_of = {r.id: e for r, e in zip(records, expected)}

        def scorer(batch: list[Record]) -> list[dict]:
            heard = said(batch, [expected_of[r.id] for r in batch], epoch)
            departed = [i for i, row in enumerate(heard) if not row["correct"]]
            grades = graded([batch[i] for i in departed], [heard[i]["response"] for i in departed], grade)
            for i, row in zip(departed, grades):
                heard[i].update(row)
            return heard
        return rows(records, epoch, scorer)

    def guard(epoch: int) -> dict:
        def scorer(batch: list[Record]) -> list[dict]:
            answers = generate(model, tokenizer, batch, drafts=[drafts.get(r.id) for r in batch])
            return graded(batch, [text for text, _ in answers], grade)
        guarded = rows(validation, epoch, scorer)
        return {"validation_accuracy": sum(r["correct"] for r in guarded) / len(guarded)} if guarded else {}

    return Check(answer, guard)


class TrainingError(ValueError):
    """Training cannot run on what was selected."""


def lora_parameters(config: TrainConfig) -> dict:
    return {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": 0.0}


def adapter_disk_bytes(model_config: dict, config: TrainConfig) -> int:
    """Disk a training writes: the kept adapter and a checkpoint with Adam's two moments (float32)."""
    return lora_parameter_count(model_config, config.lora_layers, config.lora_rank) * 4 * 4


def ranks_batch_size(batch_size: int) -> int:
    """Every batch is split evenly over the ranks: round down to a multiple of their number."""
    ranks = distributed.size()
    fitted = max(ranks, batch_size - batch_size % ranks)
    if fitted != batch_size:
        log.warning(f"batch size {batch_size} is not divisible by the {ranks} ranks; training with {fitted}")
    return fitted


def rehearsed(right: list[int], wrong: int, config: TrainConfig, epoch: int) -> list[int]:
    """The right records an epoch after the first trains again, drawn from the seed and the epoch."""
    count = min(len(right), round(config.rehearsal * wrong))
    return sorted(np.random.default_rng([config.seed, epoch, 1]).choice(right, count, replace=False).tolist())


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices in batches of similar length, in an order drawn from the seed and the epoch alone,
    so that a resumed training draws the same batches as an uninterrupted one."""
    rng = np.random.default_rng([seed, epoch])
    order = sorted(rng.permutation(len(lengths)).tolist(), key=lambda i: lengths[i])  # ties stay shuffled
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < distributed.size():  # a rank would get no row
        batches[-2] += batches.pop()
    return [batches[i] for i in rng.permutation(len(batches))]


@contextmanager
def adapters_off(model):
    """The base model, without a copy of it: every LoRA adapter's scale set to 0 for a while."""
    adapters = [m for m in model.modules() if hasattr(m, "lora_a")]
    scales = [m.scale for m in adapters]
    for m in adapters:
        m.scale = 0.0
    try:
        yield model
    finally:
        for m, scale in zip(adapters, scales):
            m.scale = scale


def loss(model, packed, known_rows: mx.array, forward: Plan, kl_weight: float):
    """Cross-entropy on the answer tokens (the prompt is masked), plus kl_weight x KL(base || adapted)
    on the answer tokens of the rows the model already knew. Returns (loss, answer tokens)."""
    logits = answer_logits(model, packed, forward)
    mask = packed.mask
    tokens = mask.sum()
    ce = (nn.losses.cross_entropy(logits, packed.targets) * mask).astype(mx.float32).sum() / tokens
    if not kl_weight:
        return ce, tokens
    with adapters_off(model):
        base = mx.stop_gradient(answer_logits(model, packed, forward))
    base = nn.log_softmax(base.astype(mx.float32), axis=-1)
    adapted = nn.log_softmax(logits.astype(mx.float32), axis=-1)
    kl = (mx.exp(base) * (base - adapted)).sum(axis=-1)
    known = mask & known_rows[:, None]
    return ce + kl_weight * (kl * known).sum() / mx.maximum(known.sum(), 1), tokens


def shared_gradients(grads, tokens: mx.array):
    """The gradient of the whole batch's mean loss when the batch is split over ranks: each rank's
    gradient weighted by its share of the answer tokens, then averaged (mlx's average_gradients)."""
    if distributed.size() == 1:
        return grads
    weight = tokens * distributed.size() / mx.distributed.all_sum(tokens, stream=mx.cpu)
    return average_gradients(tree_map(lambda g: g * weight, grads))


def save_arrays(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    tmp = path.with_name("tmp-" + path.name)  # mx.save_safetensors wants the .safetensors suffix
    mx.save_safetensors(str(tmp), arrays, metadata=metadata)
    os.replace(tmp, path)


def resume(model, optimizer, adapter_dir: Path, adapter_config: dict, fresh: dict) -> dict:
    """Progress of an interrupted training of the same configuration, its state loaded; else `fresh`."""
    config_path = adapter_dir / "adapter_config.json"
    resumable = (adapter_dir / CHECKPOINT).exists() and config_path.exists() and read_json(config_path) == adapter_config
    distributed.barrier()  # every rank has looked before rank 0 clears the folder
    if not resumable:
        if distributed.is_main():
            shutil.rmtree(adapter_dir, ignore_errors=True)
            adapter_dir.mkdir(parents=True)
            write_json(config_path, adapter_config)
        distributed.barrier()
        return fresh
    state, metadata = mx.load(str(adapter_dir / CHECKPOINT), return_metadata=True)
    model.load_weights([(k[len("adapter."):], v) for k, v in state.items() if k.startswith("adapter.")], strict=False)
    optimizer.state = tree_unflatten([(k[len("optimizer."):], v) for k, v in state.items() if k.startswith("optimizer.")])
    return json.loads(metadata["progress"])


class Trainer:
    """One training's model, optimizer and files; `epoch` and `check` are the two halves of an epoch."""

    def __init__(self, model, tokenizer, optimizer, examples: list[Example], train_spans, config: TrainConfig,
                 adapter_dir: Path):
        self.model, self.tokenizer, self.optimizer, self.config = model, tokenizer, optimizer, config
        self.examples, self.train_spans, self.adapter_dir = examples, train_spans, adapter_dir
        self.said: list[list[int] | None] = [None] * len(examples)  # the expected answers' tokens, once heard
        self.forward = plan(model)
        self.loss_and_grad = nn.value_and_grad(model, loss)

    def log(self, row: dict):
        if distributed.is_main():
            append_rows(self.adapter_dir / "train_log.jsonl", [row])
            log.info(epoch_line(row))

    def save_adapter(self):
        if distributed.is_main():
            save_arrays(self.adapter_dir / ADAPTER_FILE, dict(tree_flatten(self.model.trainable_parameters())))

    def checkpoint(self, progress: dict):
        if not distributed.is_main():
            return
        arrays = {f"adapter.{k}": v for k, v in tree_flatten(self.model.trainable_parameters())}
        arrays.update({f"optimizer.{k}": v for k, v in tree_flatten(self.optimizer.state)})
        # One file holds state and progress, so a kill can never leave them disagreeing.
        save_arrays(self.adapter_dir / CHECKPOINT, arrays, {"progress": json.dumps(progress)})

    def step(self, rows: list[int]) -> tuple[float, int]:
        mine = rows[distributed.rank()::distributed.size()]
        packed = pack([self.train_spans[i] for i in mine], self.forward.share_prefix)
        known = mx.array([self.examples[i].known for i in mine])
        (value, tokens), grads = self.loss_and_grad(self.model, packed, known, self.forward, self.config.kl_weight)
        self.optimizer.update(self.model, shared_gradients(grads, tokens))
        mx.eval(self.model.trainable_parameters(), self.optimizer.state, value, tokens)
        return value.item(), tokens.item()

    def epoch(self, epoch: int, training: list[int], batch_size: int, over_budget: Callable[[], bool]) -> dict | None:
        """Train one epoch on the examples at `training`; None when the time budget ran out in it."""
        start = time.perf_counter()
        lengths = [len(self.train_spans[i].tokens) for i in training]
        total_loss = total_tokens = 0.0
        batches = epoch_batches(lengths, batch_size, self.config.seed, epoch)
        self.model.train()
        for batch in (bar := distributed.progress(batches, desc=f"train epoch {epoch}", unit="batch")):
            value, tokens = self.step([training[i] for i in batch])
            total_loss, total_tokens = total_loss + value * tokens, total_tokens + tokens
            bar.set_postfix(loss=total_loss / max(total_tokens, 1))
            if over_budget():
                return None
        seconds = time.perf_counter() - start
        return {"event": "epoch", "epoch": epoch, "records": len(training), "loss": total_loss / max(total_tokens, 1),
                "answer_tokens": int(total_tokens), "seconds": round(seconds, 2),
                "trained": [self.examples[i].record.id for i in training]}

    def expect(self, i: int, answer: str, tokens: list[int] | None):
        """A right answer of example i in new words, and the tokens the model said it in: what the next check
        expects (the tokenizer may split the same text otherwise)."""
        self.examples[i] = replace(self.examples[i], expected=answer)
        self.said[i] = tokens

    def check(self, epoch: int, trained: list[int], progress: dict, answer: CheckAnswers) -> tuple[dict, dict]:
        """The check row of an epoch and the expected answers that changed; progress gets the records to
        train on next (those not answered right), those heard as expected, and when each was last asked.

        Asked: every record the epoch trained on (all of the wrong ones among them), and of the right ones
        it left alone, `recheck` of them, those asked longest ago first; the others stay as last heard."""
        start = time.perf_counter()
        self.model.eval()
        ids = [e.record.id for e in self.examples]
        untrained = sorted(set(range(len(ids))) - set(trained), key=lambda i: (progress["asked"].get(ids[i], 0), i))
        asked = sorted(trained + untrained[:round(self.config.recheck * len(untrained))])
        rows = answer([self.examples[i].record for i in asked],
                      [(self.examples[i].expected, self.said[i]) for i in asked], epoch)
        before = set(progress["training"])
        wrong, heard = set(before), set(progress["heard"])
        changed = {}
        for i, row in zip(asked, rows):
            progress["asked"][ids[i]] = epoch
            (wrong.discard if row["correct"] else wrong.add)(ids[i])
            as_expected = row["response"] == self.examples[i].expected
            (heard.add if as_expected else heard.discard)(ids[i])
            if row["correct"] and row["response"] and not as_expected:
                self.expect(i, row["response"], row.get("tokens"))
                changed[ids[i]] = [row["response"], row.get("tokens")]
        progress["training"], progress["heard"] = sorted(wrong), sorted(heard)

        def right(known: bool) -> list[int]:  # [how many right, of the known or unknown]
            group = [e.record.id for e in self.examples if e.known == known]
            return [sum(i not in wrong for i in group), len(group)]

        row = {"event": "check", "epoch": epoch, "asked": len(asked), "right_known": right(True),
               "right_unknown": right(False), "word_for_word": len(heard), "graded": len(rows) - sum(
                   ids[i] in heard for i in asked), "left": sorted(before - wrong), "returned": sorted(wrong - before),
               "seconds": round(time.perf_counter() - start, 2)}
        return row, changed

    def objective(self, row: dict) -> list[float]:
        """What the kept epoch maximises: the share of training records answered right, then said word for word."""
        right = row["right_known"][0] + row["right_unknown"][0]
        return [right / len(self.examples), row["word_for_word"] / len(self.examples)]


def train_lora(model, tokenizer, examples: list[Example], config: TrainConfig, adapter_dir: Path,
               check: Check | None = None) -> dict:
    """Train LoRA adapters on the examples; write the kept adapter to adapter_dir.

    With config.check, `check` is asked after each epoch (without it, a record is right only when said
    word for word as expected). A folder left by an interrupted training of the same examples and
    configuration is resumed from its last finished epoch, and ends where the uninterrupted one would.
    """
    train_spans = [target_span(tokenizer, e.record, e.target) for e in examples]
    train_spans = [replace(s, end=len(s.tokens)) for s in train_spans]  # the end-of-turn is learned too
    # mlx-lm would cut a long example silently; one cut off before its answer teaches nothing.
    too_long = [e.record.id for e, s in zip(examples, train_spans) if len(s.tokens) > config.max_seq_length]
    if too_long:
        log.warning(f"{len(too_long)} records are longer than max_seq_length={config.max_seq_length} tokens "
                    f"and are not trained on: {', '.join(too_long[:5])}{', ...' if len(too_long) > 5 else ''}")
    kept = [(e, s) for e, s in zip(examples, train_spans) if len(s.tokens) <= config.max_seq_length]
    examples, train_spans = [e for e, _ in kept], [s for _, s in kept]
    first_epoch = sorted(e.record.id for e in examples if e.selected)
    if not first_epoch:
        raise TrainingError(f"every selected record is longer than max_seq_length={config.max_seq_length} tokens")

    batch_size = ranks_batch_size(min(config.batch_size, len(first_epoch)))
    adapter_config = {
        "fine_tune_type": "lora",
        "num_layers": config.lora_layers,
        "lora_parameters": lora_parameters(config),
        "slearn_mlx": {**asdict(config), "examples_sha256": hashlib.sha256(json.dumps(
            [[e.record.id, e.target, e.expected, e.selected] for e in examples]).encode()).hexdigest()},
    }
    mx.random.seed(config.seed)  # before the LoRA layers, whose initial weights are random
    model.freeze()
    linear_to_lora_layers(model, config.lora_layers, lora_parameters(config))
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    fresh = {"epoch": 0, "training": first_epoch, "best_epoch": 0, "best": None, "stop": None, "seconds": 0.0,
             "record_epochs": 0, "check_seconds": 0.0, "check_answers": 0,
             "expected": {},  # the right answers in new words a check heard: [text, tokens] by id
             "heard": sorted(e.record.id for e in examples if e.known),  # said as expected when last asked
             "asked": {}}  # the epoch each record was last asked in
    progress = resume(model, optimizer, adapter_dir, adapter_config, fresh)
    position = {e.record.id: i for i, e in enumerate(examples)}
    trainer = Trainer(model, tokenizer, optimizer, examples, train_spans, config, adapter_dir)
    for i, e in enumerate(examples):  # the right answers a check before the interruption heard
        if e.record.id in progress["expected"]:
            trainer.expect(i, *progress["expected"][e.record.id])
    started = time.perf_counter() - progress["seconds"]

    def over_budget() -> bool:
        # Ranks' clocks differ: one rank stopping alone would leave the others waiting for its gradients.
        return bool(config.max_seconds) and distributed.any_rank(time.perf_counter() - started > config.max_seconds)

    if config.check and check is None:
        check = Check(word_for_word(model, tokenizer))
    stopped_before = progress["stop"]
    while progress["stop"] is None and progress["epoch"] < config.epochs:
        epoch = progress["epoch"] + 1
        wrong = sorted(position[i] for i in progress["training"])
        again = rehearsed([i for i in range(len(examples)) if i not in set(wrong)], len(wrong), config, epoch) \
            if epoch > 1 and config.check else []
        training = sorted(wrong + again)
        row = trainer.epoch(epoch, training, batch_size, over_budget)
        if row is None:  # the weights are mid-epoch now; the checkpoint only records that training ended
            progress["stop"] = "time budget"
            trainer.checkpoint(progress)
            break
        trainer.log({**row, "rehearsed": len(again)})
        progress["epoch"] = epoch
        progress["record_epochs"] += len(training)
        if config.check:
            checked, changed = trainer.check(epoch, training, progress, check.answer)
            progress["expected"].update(changed)
            objective = trainer.objective(checked)
            if progress["best"] is None or objective > progress["best"]:
                progress["best"], progress["best_epoch"] = objective, epoch
                trainer.save_adapter()
                if check.guard:
                    guard_start = time.perf_counter()
                    checked.update(check.guard(epoch))
                    checked["seconds"] = round(checked["seconds"] + time.perf_counter() - guard_start, 2)
            progress["check_seconds"] += checked["seconds"]
            progress["check_answers"] += checked["asked"]
            trainer.log({**checked, "kept": progress["best_epoch"] == epoch})
            if not progress["training"]:
                progress["stop"] = "every training record answered right"
            elif epoch - progress["best_epoch"] >= config.patience:
                progress["stop"] = f"no better objective in {config.patience} epoch(s)"
        else:
            progress["best_epoch"] = epoch
            trainer.save_adapter()
        if progress["stop"] is None and over_budget():
            progress["stop"] = "time budget"
        progress["seconds"] = time.perf_counter() - started
        trainer.checkpoint(progress)
    if progress["stop"] and not stopped_before:
        trainer.log({"event": "stop", "reason": progress["stop"], "epoch": progress["epoch"]})
    if not (adapter_dir / ADAPTER_FILE).exists():  # stopped by the time budget inside the first epoch
        trainer.save_adapter()
    distributed.barrier()
    return {"examples": len(examples), "first_epoch": len(first_epoch), "skipped_too_long": too_long,
            "batch_size": batch_size, "epochs_run": progress["epoch"], "best_epoch": progress["best_epoch"],
            "objective": progress["best"][0] if progress["best"] else None, "stop": progress["stop"],
            "record_epochs": progress["record_epochs"], "check_answers": progress["check_answers"],
            "check_seconds": round(progress["check_seconds"], 2)}
