"""What a diagnosis costs next to the training it saves, and how well probing agrees with answering.

Measures, in one run on one machine and the same records:
- generate-and-grade diagnosis time, probe (teacher-forced) diagnosis time, and one LoRA
  training epoch over the same records; prints each diagnosis as a ratio of the epoch, and
  the peak MLX memory of each;
- the probe's agreement with generate-and-grade (Cohen's kappa), with the log-probability
  threshold chosen on the even-numbered records and checked on the odd-numbered ones.

    python -m benchmarks.diagnosis [DATA] [--limit 400] [--model M]
"""

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks import best_threshold, fmt, kappa, print_provenance
from slearn_mlx.blas import setup

setup()  # OpenBLAS before mlx, as the command does (SLEARN_MLX_BLAS=reference keeps the wheel's)

import mlx.core as mx
from slearn_mlx.answer import in_process
from slearn_mlx.data import default_dataset, load_records
from slearn_mlx.resumable_rows import answer_and_grade, rows_for
from slearn_mlx.grade import auto_grade
from slearn_mlx.models import load_model, resolve_model
from slearn_mlx.probe import probe_batch
from slearn_mlx.forward import plan
from slearn_mlx.config import TrainConfig
from slearn_mlx.train import Example, train_lora


def timed(fn):
    """fn's result, seconds and peak MLX memory in MB."""
    mx.reset_peak_memory()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, mx.get_peak_memory() / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(default_dataset()))
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--model")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print_provenance("benchmarks.diagnosis")

    records = load_records(Path(args.data))[: args.limit]
    model_path = resolve_model(args.model)
    model, tokenizer = load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        generated, generate_s, generate_mb = timed(lambda: answer_and_grade(
            in_process(model, tokenizer), records, Path(tmp) / "generate.jsonl", auto_grade, args.batch_size, "generate"))
        forward = plan(model)
        probed, probe_s, probe_mb = timed(lambda: rows_for(
            records, Path(tmp) / "probe.jsonl", args.batch_size, "probe",
            lambda batch: probe_batch(model, tokenizer, batch, 0.0, forward)))
        train_model, _ = load_model(model_path)
        examples = [Example(r, r.answer, r.answer, known=False, selected=True) for r in records]
        _, epoch_s, epoch_mb = timed(lambda: train_lora(
            train_model, tokenizer, examples, TrainConfig(epochs=1, check=False), Path(tmp) / "adapter"))

    labels = [row["correct"] for row in generated]
    logprobs = [row["mean_logprob"] for row in probed]
    threshold = best_threshold(labels[0::2], logprobs[0::2])
    checked = kappa([lp >= threshold for lp in logprobs[1::2]], labels[1::2])
    reproduces = kappa([row["greedy_reproduces"] for row in probed], labels)

    print(f"\n{len(records)} records of {args.data}, model {model_path.name}, answers known by "
          f"generate-and-grade: {sum(labels)}")
    print("| work | seconds | / one training epoch | peak MLX memory |")
    print("|---|---|---|---|")
    for name, seconds, mb in [("diagnosis: generate and grade", generate_s, generate_mb),
                              ("diagnosis: probe", probe_s, probe_mb),
                              ("one LoRA epoch over the same records", epoch_s, epoch_mb)]:
        print(f"| {name} | {seconds:.1f} | {seconds / epoch_s:.2f} | {mb:,.0f} MB |")
    print(f"\nprobe vs generate-and-grade: threshold {threshold:.3f} chosen on even records, "
          f"kappa {fmt(checked)} on odd records; 'greedy reproduces the reference' alone: kappa {fmt(reproduces)}")


if __name__ == "__main__":
    main()
