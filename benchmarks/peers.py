"""This project against the usual Linux alternative, torch + transformers + peft, on the same work.

    pip install -e ".[peers]"
    python -m benchmarks.peers [--runs 3] [--train 64] [--answer 64]

On Linux, install a CPU build of torch first: a plain `pip install torch` may bring a CUDA build
of several GB. PyTorch publishes CPU wheels on its own index
(`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`); where a CPU wheel
of that version is what pip finds, `pip install torch==2.13.0` is enough. Without torch, transformers
and peft the script says so and stops.

Both sides load the same float32 weights: the default model, dequantized by slearn-mlx and written
once to a temporary folder that MLX and transformers both read. Measured, each variant in a fresh
process (the BLAS and the thread count are chosen at start), in rounds that run every variant once:
- training: one LoRA epoch over the first N default records, rank 8 on q/k/v/o/gate/up/down of the
  last 16 layers, batch 8, Adam at 1e-4, loss on the answer tokens; real (unpadded) tokens per second.
  slearn-mlx's train_lora; mlx-lm's tuner with its own batching (as `mlx_lm.lora` trains); torch +
  peft with batches of similar length cut to their longest, at 1 thread and at one per core. The
  loss of the first batch before any update is printed for MLX and torch: the same model and the
  same loss give the same number.
- answering: the N shortest default questions in one batch, greedy, 32 new tokens at most, stopped
  at the end of the first sentence as slearn-mlx's answerer stops a short answer; records per second.
  slearn-mlx's answerer; torch's `generate` with the same stop (the answers are compared);
  `mlx_lm.batch_generate` with 32 tokens and no stop.
Ratios are to torch + peft at its best thread count in the same round; medians over the rounds.

    python -m benchmarks.peers --end-to-end [DATA] [--torch-epochs 3] [--out DIR]

The whole method against the usual way, full-data fine-tuning: this project's default `adapt` on DATA
(default: the bundled data), against the same engine trained on the bare references of every training
record of the same split for 3 epochs without checks (`adapt --policy all --targets reference --no-check
--epochs 3`), and against torch + peft (one thread per core, when installed) trained the same way for
--torch-epochs epochs. Each side's time is what it takes to make the adapted model: ours the diagnosis of
the training records, the restatements, the selection and the training with its checks (stages.json, as
`bench` charges it); full-data fine-tuning its training alone. Each adapted model then answers every
record of DATA through slearn-mlx's answerer and graders (`adapt`'s evaluation; `diagnose --model` on
torch's weights, merged and saved), so the accuracies differ only by the training. Known kept and
unknown learned are over the training records the model before training answered right and wrong.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from benchmarks import print_provenance, reference_training

PEERS = ("torch", "transformers", "peft")
CPUS = os.cpu_count()
LORA_KEYS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_TOKENS = 32


def missing_peers() -> list[str]:
    return [name for name in PEERS if find_spec(name) is None]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def model_folder(folder: Path):
    """The float32 model folder both sides load (the default model, dequantized); its tokenizer."""
    from slearn_mlx.blas import setup

    setup()  # first: the BLAS that mlx must find
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from slearn_mlx.models import load_model, resolve_model

    source = resolve_model(None)
    model, tokenizer = load_model(source)  # dequantized to float32
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    config = json.loads((source / "config.json").read_text())
    config.pop("quantization", None)
    (folder / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return tokenizer


def prepare(folder: Path, train: int, answer: int) -> None:
    """The model folder, and the token ids of the work (data.json)."""
    from slearn_mlx.answer import by_length
    from slearn_mlx.prompts import FIRST_SENTENCE_END, prompt_messages
    from slearn_mlx.data import default_dataset, load_records

    tokenizer = model_folder(folder)
    records = load_records(default_dataset())
    asked = by_length(records)[:answer]
    (folder / "data.json").write_text(json.dumps({
        "train": [(span.tokens, span.start) for span in reference_training(tokenizer, records[:train])[1]],
        "prompts": [tokenizer.apply_chat_template(prompt_messages(r), add_generation_prompt=True) for r in asked],
        "stop": FIRST_SENTENCE_END.pattern, "eos": sorted(tokenizer.eos_token_ids), "train_records": train,
        "answer_records": answer,
    }))


def first_batch(examples: list, size: int = 8) -> tuple[list[list[int]], list[list[int]]]:
    """The first `size` examples padded with 0 to one past the longest, and their [offset, length] rows,
    as mlx-lm batches them: the loss both sides compute before any update."""
    rows = examples[:size]
    width = max(len(tokens) for tokens, _ in rows) + 1
    return [tokens + [0] * (width - len(tokens)) for tokens, _ in rows], [[offset, len(tokens)] for tokens, offset in rows]


def timed(work) -> tuple[object, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


# Workers: each runs in its own process and returns {"per_second": ...} and what the parent checks.

def mlx_train(folder: Path, data: dict, plain: bool) -> dict:
    from slearn_mlx.blas import setup

    setup()  # first: the BLAS that mlx must find
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import TrainingArgs, default_loss, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from slearn_mlx.data import default_dataset, load_records
    from slearn_mlx.models import load_model
    from slearn_mlx.config import TrainConfig
    from slearn_mlx.train import lora_parameters, train_lora

    model, tokenizer = load_model(folder)
    config = TrainConfig(epochs=1, check=False)
    tokens = sum(len(t) for t, _ in data["train"])
    batch, lengths = first_batch(data["train"])
    loss = default_loss(model, mx.array(batch), mx.array(lengths))[0].item()  # LoRA's B starts at 0: the same
    with tempfile.TemporaryDirectory() as adapter_dir:
        if plain:
            model.freeze()
            linear_to_lora_layers(model, config.lora_layers, lora_parameters(config))
            steps = -(-len(data["train"]) // config.batch_size)
            args = TrainingArgs(batch_size=config.batch_size, iters=steps, steps_per_report=steps, steps_per_save=steps + 1,
                                adapter_file=str(Path(adapter_dir) / "adapters.safetensors"))
            _, seconds = timed(lambda: train(model, optim.Adam(learning_rate=config.learning_rate), data["train"], args=args))
        else:
            records = load_records(default_dataset())[: data["train_records"]]
            _, seconds = timed(lambda: train_lora(model, tokenizer, reference_training(tokenizer, records)[0], config,
                                                      Path(adapter_dir)))
    return {"per_second": tokens / seconds, "first_loss": loss}


def torch_loss(model, batch, lengths):
    """mlx-lm's default_loss in torch: cross-entropy on the answer tokens, as train_lora computes it."""
    import torch

    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(input_ids=inputs).logits
    steps = torch.arange(1, targets.shape[1] + 1)
    mask = (steps >= lengths[:, 0:1]) & (steps <= lengths[:, 1:])
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (ce * mask).sum() / mask.sum()


def torch_lora_model(folder: Path, threads: int):
    """The float32 model with peft's LoRA where train_lora puts it, and an Adam over the LoRA weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    layers = model.config.num_hidden_layers
    # mlx-lm scales LoRA's product by `scale` (20); peft by lora_alpha / r.
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8 * 20, lora_dropout=0.0, target_modules=LORA_KEYS,
                                             layers_to_transform=list(range(layers - 16, layers))))
    return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def length_batches(examples: list, size: int = 8) -> list:
    """Batches of similar lengths, as mlx-lm groups them, each cut to its longest."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    return [first_batch(examples[i : i + size]) for i in range(0, len(examples), size)]


def torch_epoch(model, optimizer, batches: list) -> None:
    import torch

    for batch, lengths in batches:
        torch_loss(model, torch.tensor(batch), torch.tensor(lengths)).backward()
        optimizer.step()
        optimizer.zero_grad()


def torch_train(folder: Path, data: dict, threads: int) -> dict:
    import torch

    model, optimizer = torch_lora_model(folder, threads)
    batches = length_batches(data["train"])
    first, lengths = first_batch(data["train"])
    with torch.no_grad():
        loss = torch_loss(model, torch.tensor(first), torch.tensor(lengths)).item()
    _, seconds = timed(lambda: torch_epoch(model, optimizer, batches))
    return {"per_second": sum(len(t) for t, _ in data["train"]) / seconds, "first_loss": loss}


def torch_train_all(folder: Path, data: dict, threads: int) -> dict:
    """torch + peft trained on every training record for data["epochs"] epochs, the batches in a new seeded
    order each epoch; the model, LoRA merged, saved as data["out"] for slearn-mlx to evaluate."""
    import random

    model, optimizer = torch_lora_model(folder, threads)
    batches = length_batches(data["train"])

    def train():
        for epoch in range(data["epochs"]):
            torch_epoch(model, optimizer, random.Random(epoch).sample(batches, len(batches)))
    _, seconds = timed(train)
    out = Path(data["out"])
    model.merge_and_unload().save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(folder / name, out / name)
    return {"seconds": seconds}


def mlx_answer(folder: Path, data: dict, plain: bool) -> dict:
    from slearn_mlx.blas import setup

    setup()  # first: the BLAS that mlx must find
    from mlx_lm import batch_generate

    from slearn_mlx.answer import by_length, in_process
    from slearn_mlx.data import default_dataset, load_records
    from slearn_mlx.models import load_model

    model, tokenizer = load_model(folder)
    if plain:
        response, seconds = timed(lambda: batch_generate(model, tokenizer, data["prompts"], max_tokens=MAX_TOKENS))
        return {"per_second": len(data["prompts"]) / seconds}
    records = by_length(load_records(default_dataset()))[: data["answer_records"]]
    answers, seconds = timed(lambda: in_process(model, tokenizer)(records))
    return {"per_second": len(answers) / seconds, "answers": answers}


def torch_answer(folder: Path, data: dict, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts, stop = data["prompts"], re.compile(data["stop"])
    width = max(len(p) for p in prompts)
    inputs = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # left-padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    class FirstSentence(StoppingCriteria):
        """A row is done at the end of its first sentence, as slearn-mlx stops a short answer."""
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([bool(stop.search(tokenizer.decode(row[width:], skip_special_tokens=True)))
                                 for row in input_ids.tolist()])

    with torch.no_grad():
        output, seconds = timed(lambda: model.generate(
            input_ids=inputs, attention_mask=mask, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=0,
            eos_token_id=data["eos"], stopping_criteria=StoppingCriteriaList([FirstSentence()])))
    answers = []
    for row in output[:, width:].tolist():
        text = tokenizer.decode(row, skip_special_tokens=True)  # the end of sequence and the padding after it
        answers.append((text[: end.end()] if (end := stop.search(text)) else text).strip())
    return {"per_second": len(prompts) / seconds, "answers": answers}


WORK = {
    "training": {
        "slearn-mlx (train_lora)": (mlx_train, False),
        "mlx-lm tuner, its own batching": (mlx_train, True),
        "torch + peft, 1 thread": (torch_train, 1),
        f"torch + peft, {CPUS} threads": (torch_train, CPUS),
    },
    "answering": {
        "slearn-mlx (answer.in_process)": (mlx_answer, False),
        "mlx_lm.batch_generate, 32 tokens": (mlx_answer, True),
        "torch generate, 1 thread": (torch_answer, 1),
        f"torch generate, {CPUS} threads": (torch_answer, CPUS),
    },
}


# What a worker process can be asked to do: the throughput work, and end_to_end's torch side.
WORKERS = {**WORK, "end to end": {"torch + peft, all training records": (torch_train_all, CPUS)}}


def worker(work: str, variant: str, folder: Path) -> None:
    function, argument = WORKERS[work][variant]
    print(json.dumps(function(folder, json.loads((folder / "data.json").read_text()), argument)))


def run(work: str, variant: str, folder: Path) -> dict:
    env = dict(os.environ)
    if variant.startswith("torch"):
        env["SLEARN_MLX_BLAS"] = "reference"  # nothing of slearn-mlx's in torch's process
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--worker", work, variant, str(folder)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{work}, {variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slearn_mlx_command(*args: str) -> float:
    """Run a slearn-mlx command in its own process, as a user would; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "slearn_mlx", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def end_to_end(data: Path, torch_epochs: int, folder: Path) -> None:
    """Our default adapt against the usual way, full-data fine-tuning, done twice: by this same engine
    (`adapt --policy all --targets reference --no-check --epochs 3`) and by torch + peft (when installed).
    The time to the adapted model and the accuracy each reaches, graded alike."""
    from slearn_mlx.artifacts import read_json, read_rows
    from slearn_mlx.policy_bench import method_seconds
    from slearn_mlx.metrics import accuracy
    from slearn_mlx.report import percent
    from slearn_mlx.run import load_run

    tokenizer = model_folder(folder)
    ours, same_engine = folder / "adapt", folder / "full-data"
    adapt_seconds = slearn_mlx_command("adapt", str(data), "--out", str(ours))
    slearn_mlx_command("adapt", str(data), "--out", str(same_engine), "--policy", "all", "--targets", "reference",
                       "--no-check", "--epochs", "3")
    adapted = load_run(ours)
    records, training = adapted.records, adapted.records_in("train")

    def graded(path: Path) -> dict[str, dict]:
        return {row["id"]: row for row in read_rows(path)}

    def seconds(run: Path) -> float:
        return method_seconds(load_run(run).config, read_json(run / "stages.json"))["total"]

    base_rows = graded(ours / "diagnosis.jsonl")
    groups = {"whole set": [r.id for r in records],
              "known kept": [r.id for r in training if base_rows[r.id]["correct"]],
              "unknown learned": [r.id for r in training if not base_rows[r.id]["correct"]],
              "held out": [r.id for r in adapted.records_in("held_out")]}
    sides = [("the model before training", None, base_rows),
             ("slearn-mlx adapt (defaults)", seconds(ours), graded(ours / "evaluation.jsonl")),
             ("full-data fine-tuning, this engine", seconds(same_engine), graded(same_engine / "evaluation.jsonl"))]
    if missing := missing_peers():
        print(f"torch + peft left out: {', '.join(missing)} not installed (pip install -e '.[peers]')")
    else:
        (folder / "data.json").write_text(json.dumps({
            "train": [(span.tokens, span.start) for span in reference_training(tokenizer, training)[1]],
            "epochs": torch_epochs, "out": str(folder / "torch-adapted")}))
        torch_seconds = run("end to end", "torch + peft, all training records", folder)["seconds"]
        slearn_mlx_command("diagnose", str(data), "--model", str(folder / "torch-adapted"), "--out",
                           str(folder / "torch-evaluated"))
        sides.append((f"torch + peft, {torch_epochs} epochs, {CPUS} threads", torch_seconds,
                      graded(folder / "torch-evaluated" / "diagnosis.jsonl")))
    full = sides[2][1]
    torch_side = sides[3][1] if len(sides) > 3 else None
    print(f"\n{data}: {len(records)} records, {len(training)} in training ({len(groups['known kept'])} known); "
          f"full-data fine-tuning on bare references; adapt with its defaults ({adapt_seconds:.0f} s in all, "
          "evaluation included)")
    print("\n| | seconds to the adapted model | / full-data, this engine | / torch + peft | "
          + " | ".join(groups) + " |\n|---|---|---|---|" + "---|" * len(groups))
    for name, spent, rows in sides:
        ratios = [f"{spent / full:.2f}" if spent else "-", f"{spent / torch_side:.2f}" if spent and torch_side else "-"]
        print(f"| {name} | {f'{spent:.0f}' if spent else '-'} | " + " | ".join(ratios) + " | "
              + " | ".join(percent(accuracy(rows, ids)) for ids in groups.values()) + " |")


def torch_best(round_: dict) -> float:
    return max(result["per_second"] for variant, result in round_.items() if variant.startswith("torch"))


def report(work: str, rounds: list[dict]) -> None:
    print(f"\n{work}:\n\n| variant | runs | per second | / torch at its best thread count |\n|---|---|---|---|")
    for variant in WORK[work]:
        rate = statistics.median(r[variant]["per_second"] for r in rounds)
        ratio = statistics.median(r[variant]["per_second"] / torch_best(r) for r in rounds)
        print(f"| {variant} | {len(rounds)} | {rate:.2f} | {ratio:.2f} |")
    last = rounds[-1]
    if work == "training":
        losses = ", ".join(f"{v}: {r['first_loss']:.4f}" for v, r in last.items())
        print(f"\nloss of the first batch before any update: {losses}")
    if work == "answering":
        ours, theirs = last["slearn-mlx (answer.in_process)"]["answers"], last[f"torch generate, {CPUS} threads"]["answers"]
        print(f"\nanswers equal to torch's: {sum(a == b for a, b in zip(ours, theirs))} of {len(ours)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="rounds; each runs every variant once")
    parser.add_argument("--train", type=int, default=64, help="default records in the LoRA epoch")
    parser.add_argument("--answer", type=int, default=64, help="shortest default questions answered in one batch")
    parser.add_argument("--end-to-end", nargs="?", const="", metavar="DATA",
                        help="instead: adapt on DATA (default: the bundled data) against full-data fine-tuning by this "
                             "engine and by torch + peft (when installed) on all its training records")
    parser.add_argument("--torch-epochs", type=int, default=3, help="with --end-to-end: torch + peft's epochs")
    parser.add_argument("--out", type=Path, help="with --end-to-end: keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], Path(args.worker[2]))
    print_provenance("benchmarks.peers")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.end_to_end is not None:
        from slearn_mlx.data import default_dataset

        data = Path(args.end_to_end or default_dataset())
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            return end_to_end(data, args.torch_epochs, args.out)
        with tempfile.TemporaryDirectory() as folder:
            return end_to_end(data, args.torch_epochs, Path(folder))
    if missing := missing_peers():
        print(f"benchmarks.peers: {', '.join(missing)} not installed, nothing measured. Install the peers with "
              f"pip install -e \".[peers]\" (a CPU build of torch first: see python -m benchmarks.peers --help)")
        return
    with tempfile.TemporaryDirectory() as folder:
        prepare(Path(folder), args.train, args.answer)
        results = {work: [] for work in WORK}
        for round_ in range(args.runs):
            for work, variants in WORK.items():
                results[work].append({})
                for variant in variants:
                    results[work][-1][variant] = result = run(work, variant, Path(folder))
                    print(f"round {round_ + 1}, {work}, {variant}: {result['per_second']:.2f}/s", file=sys.stderr, flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\ntraining: one epoch over the first {args.train} default records, real tokens/s; answering: the "
          f"{args.answer} shortest default questions in one batch, records/s; medians of {args.runs} rounds")
    for work, rounds in results.items():
        report(work, rounds)


if __name__ == "__main__":
    main()
