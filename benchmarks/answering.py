"""How fast this project answers a dataset, as ratios to the plain ways of doing it.

Every variant answers the same records with the same model, greedy, each in a fresh process
(OpenBLAS can only be chosen before mlx is imported), and reports records per second:
- slearn-mlx: answer.in_process (decode.py: prefix once, whole-batch prefill, finished rows masked,
  first-sentence stop, budgets); and the same through mlx-lm's BatchGenerator, as the build before decode.py;
- mlx_lm.generate, one prompt at a time, 32 new tokens at most;
- mlx_lm.batch_generate with its defaults and a fixed 32-token budget, batches of 64;
- slearn-mlx without OpenBLAS (MLX's reference BLAS), and with the weights left 4-bit quantized.

    python -m benchmarks.answering [DATA] [--limit 64] [--model M]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import print_provenance
from slearn_mlx.blas import setup

setup()  # OpenBLAS before mlx, as the command does (SLEARN_MLX_BLAS=reference keeps the wheel's)

VARIANTS = {
    "slearn-mlx (float32, OpenBLAS)": ("ours", {}),
    "slearn-mlx through mlx-lm's BatchGenerator": ("batch_generator", {}),
    "mlx_lm.generate, one at a time": ("generate", {}),
    "mlx_lm.batch_generate, 32 tokens": ("batch_generate", {}),
    "slearn-mlx without OpenBLAS": ("ours", {"SLEARN_MLX_BLAS": "reference"}),
    "slearn-mlx, weights as stored (4-bit)": ("quantized", {}),
}


def answer_all(variant: str, records, model_name: str | None) -> list[str]:
    from mlx_lm import batch_generate, generate, load

    from slearn_mlx.answer import in_process
    from slearn_mlx.prompts import chat_tokens, prompt_messages
    from slearn_mlx.models import load_model, resolve_model

    path = resolve_model(model_name)
    # "quantized": the weights as stored (the default's: 4-bit from its GGUF), not dequantized by load_model.
    model, tokenizer = load(str(path)) if variant == "quantized" else load_model(path)
    if variant == "batch_generator":  # the path decode.py replaced, which models it cannot decode still take
        from slearn_mlx import answer

        answer.plain_kv_caches = lambda model: False
    if variant in ("ours", "quantized", "batch_generator"):
        return in_process(model, tokenizer)(records)
    prompts = [chat_tokens(tokenizer, prompt_messages(r), True) for r in records]
    if variant == "generate":
        return [generate(model, tokenizer, p, max_tokens=32) for p in prompts]
    return [t for i in range(0, len(prompts), 64) for t in batch_generate(model, tokenizer, prompts[i:i + 64], max_tokens=32).texts]


def worker(variant: str, data: str, limit: int, model_name: str | None) -> None:
    from slearn_mlx.answer import by_length
    from slearn_mlx import blas
    from slearn_mlx.data import load_records

    records = by_length(load_records(Path(data))[:limit])
    start = time.perf_counter()
    answers = answer_all(variant, records, model_name)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "records": len(answers), "blas": blas.loaded}))


def main():
    from slearn_mlx.data import default_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(default_dataset()))
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--model")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.limit, args.model)
    print_provenance("benchmarks.answering")
    results = {}
    for name, (variant, env) in VARIANTS.items():
        model = ["--model", args.model] if args.model else []
        proc = subprocess.run([sys.executable, "-m", "benchmarks.answering", args.data, "--limit", str(args.limit),
                               *model, "--worker", variant], env={**os.environ, **env}, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    ours = results["slearn-mlx (float32, OpenBLAS)"]
    print(f"\n{args.limit} records of {args.data}")
    print("| variant | seconds | records/s | slearn-mlx is faster by |")
    print("|---|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['seconds']:.1f} | {result['records'] / result['seconds']:.2f} "
              f"| {result['seconds'] / ours['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
