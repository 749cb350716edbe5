"""Which BLAS, with which thread settings, makes this project fastest on this CPU (and, as one more
variant, what slearn_mlx/activations.py's SwiGLU is worth against mlx-lm's).

MLX resolves `cblas_sgemm` to the BLAS loaded globally before it is imported (slearn_mlx/blas.py),
so every variant runs in a fresh process, with SLEARN_MLX_BLAS and the thread variables of the
variant and none of the caller's. Each process measures, with this project's own code:
- a 1024x1024 float32 matmul, GFLOP/s: shows which library was resolved (the reference BLAS
  reaches a few GFLOP/s), with the file `cblas_sgemm` resolved to;
- answering the N shortest default questions in one batch (answer.in_process), records/s;
- one LoRA epoch over the first M default records (train.train_lora, default settings), real
  tokens/s, the compilation of its first step included;
with the user and system CPU seconds of each, since spinning BLAS threads show as system time.

A round runs every variant once, in turn, so a change in the machine's speed during the run hits
all of them; each ratio to the first variant (the build before this benchmark existed: OpenBLAS's
pthread build with one thread per core) is taken within a round, and the median over the rounds
is printed. Another job on the machine makes multi-threaded variants look worse than they are:
the load average is printed before and after.

`--busy N` keeps N cores busy with spinning processes for the whole run: what another program on the
machine does to the thread choice, reproducibly.

    python -m benchmarks.blas [--runs 3] [--answer 32] [--train 24] [--busy 0] [--variants NAME ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import print_provenance, reference_training
from slearn_mlx import blas

CPUS = str(os.cpu_count())
BASELINE = f"openblas-pthread, {CPUS} threads (before)"
VARIANTS = {
    BASELINE: {"SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": CPUS},
    "openblas-pthread, 1 thread": {"SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": "1"},
    # 2^4 cycles, the shortest OpenBLAS allows (its default is 2^28): idle threads sleep at once.
    "openblas-pthread, thread timeout 2^4": {"SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": CPUS,
                                             "OPENBLAS_THREAD_TIMEOUT": "4"},
    "openblas-openmp, OMP_WAIT_POLICY=passive": {"SLEARN_MLX_BLAS": "openblas-openmp", "OMP_NUM_THREADS": CPUS,
                                                 "OMP_WAIT_POLICY": "passive"},
    "openblas-openmp, GOMP_SPINCOUNT=10000": {"SLEARN_MLX_BLAS": "openblas-openmp", "OMP_NUM_THREADS": CPUS,
                                              "GOMP_SPINCOUNT": "10000"},
    f"blis-pthread, {CPUS} threads": {"SLEARN_MLX_BLAS": "blis", "BLIS_NUM_THREADS": CPUS},
    "blis-pthread, 1 thread": {"SLEARN_MLX_BLAS": "blis", "BLIS_NUM_THREADS": "1"},
    "blis-openmp, OMP_WAIT_POLICY=passive": {"SLEARN_MLX_BLAS": "blis-openmp", "BLIS_NUM_THREADS": CPUS,
                                             "OMP_WAIT_POLICY": "passive"},
    "mkl, GNU OpenMP, OMP_WAIT_POLICY=passive": {"SLEARN_MLX_BLAS": "mkl", "MKL_THREADING_LAYER": "GNU",
                                                 "MKL_NUM_THREADS": CPUS, "OMP_WAIT_POLICY": "passive"},
    "mkl, Intel OpenMP, KMP_BLOCKTIME=0": {"SLEARN_MLX_BLAS": "mkl", "MKL_THREADING_LAYER": "INTEL",
                                           "MKL_NUM_THREADS": CPUS, "KMP_BLOCKTIME": "0"},
    "mkl, sequential": {"SLEARN_MLX_BLAS": "mkl", "MKL_THREADING_LAYER": "SEQUENTIAL"},
    "slearn-mlx's choice (SLEARN_MLX_BLAS unset)": {},
    # not a BLAS: the activation our models use on an x86 CPU (slearn_mlx/activations.py) against mlx-lm's
    f"openblas-pthread, {CPUS} threads, mlx-lm's swiglu": {"SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": CPUS,
                                                         "SLEARN_MLX_KEEP_SWIGLU": "1"},
}


def matmul_gflops() -> float:
    import mlx.core as mx

    a = mx.random.normal((1024, 1024))
    for _ in range(3):
        mx.eval(a @ a)
    start, n = time.perf_counter(), 10
    for _ in range(n):
        mx.eval(a @ a)
    return 2 * 1024**3 * n / (time.perf_counter() - start) / 1e9


def phase(work) -> dict:
    """Wall and CPU seconds of work(); returns them with its result."""
    cpu, start = os.times(), time.perf_counter()
    result = work()
    wall, after = time.perf_counter() - start, os.times()
    return {"result": result, "seconds": wall, "user": after.user - cpu.user, "system": after.system - cpu.system}


def worker(answer: int, train: int) -> None:
    from slearn_mlx.answer import by_length, in_process
    from slearn_mlx.data import default_dataset, load_records
    from slearn_mlx.models import load_model, resolve_model
    from slearn_mlx.config import TrainConfig
    from slearn_mlx.train import train_lora

    gflops = matmul_gflops()
    records = load_records(default_dataset())
    model, tokenizer = load_model(resolve_model(None))
    answering = phase(lambda: len(in_process(model, tokenizer)(by_length(records)[:answer])))
    examples, spans = reference_training(tokenizer, records[:train])
    tokens = sum(len(s.tokens) for s in spans)
    with tempfile.TemporaryDirectory() as adapter_dir:
        training = phase(lambda: train_lora(model, tokenizer, examples, TrainConfig(epochs=1, check=False),
                                            Path(adapter_dir)))
    print(json.dumps({"blas": blas.loaded, "gflops": gflops,
                      "answering": {**answering, "per_second": answering["result"] / answering["seconds"]},
                      "training": {**training, "result": None, "per_second": tokens / training["seconds"]}}))


def clean_environment() -> dict:
    """The caller's environment without BLAS choices, thread settings or SwiGLU choice: each variant sets its own."""
    return {k: v for k, v in os.environ.items()
            if k not in ("SLEARN_MLX_BLAS", "SLEARN_MLX_KEEP_SWIGLU") and not k.startswith(blas.THREAD_VARIABLES)}


def run_variant(env: dict, args) -> dict | str:
    """One fresh process's measurements, or why there are none."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.blas", "--answer", str(args.answer), "--train",
                           str(args.train), "--worker"], env={**clean_environment(), **env}, capture_output=True, text=True)
    if proc.returncode:
        return f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = result["blas"]
    if loaded is None or os.path.realpath(loaded["cblas_sgemm"] or "") != os.path.realpath(loaded["library"]):
        return f"cblas_sgemm not resolved to the chosen library: {loaded}"
    return result


def ratio(results: list, variant: str, work: str) -> float | None:
    """Median over the rounds of the variant's rate over the baseline's of the same round."""
    pairs = [(r[variant], r[BASELINE]) for r in results if isinstance(r.get(variant), dict) and isinstance(r.get(BASELINE), dict)]
    return statistics.median(v[work]["per_second"] / b[work]["per_second"] for v, b in pairs) if pairs else None


def print_table(results: list[dict], variants: list[str]) -> None:
    print("| variant | runs | matmul GFLOP/s | training tokens/s | / before | CPU s (system) | "
          "answering records/s | / before | CPU s (system) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        runs = [r[variant] for r in results if isinstance(r.get(variant), dict)]
        failures = {r[variant] for r in results if isinstance(r.get(variant), str)}
        if not runs:
            print(f"| {variant} | 0 | {'; '.join(sorted(failures))} | | | | | | |")
            continue
        cells = [f"{statistics.median(r['gflops'] for r in runs):.0f}"]
        for work in ("training", "answering"):
            rate = statistics.median(r[work]["per_second"] for r in runs)
            user = statistics.median(r[work]["user"] for r in runs)
            system = statistics.median(r[work]["system"] for r in runs)
            cells += [f"{rate:.2f}", f"{ratio(results, variant, work):.2f}", f"{user + system:.1f} ({system:.1f})"]
        print(f"| {variant} | {len(runs)} | {' | '.join(cells)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="rounds; each runs every variant once")
    parser.add_argument("--answer", type=int, default=32, help="shortest default questions answered in one batch")
    parser.add_argument("--train", type=int, default=24, help="default records in the LoRA epoch")
    parser.add_argument("--busy", type=int, default=0, help="cores kept busy by spinning processes meanwhile")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help=f"default: all; {BASELINE!r} always runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        blas.setup()  # with the variant's SLEARN_MLX_BLAS and thread variables, before the worker imports mlx
        return worker(args.answer, args.train)
    print_provenance("benchmarks.blas")
    variants = [BASELINE, *[v for v in args.variants or VARIANTS if v != BASELINE]]
    missing = {v: VARIANTS[v]["SLEARN_MLX_BLAS"] for v in variants
               if VARIANTS[v].get("SLEARN_MLX_BLAS", "auto") != "auto" and not blas.find(VARIANTS[v]["SLEARN_MLX_BLAS"])}
    for variant, choice in missing.items():
        print(f"skipped {variant}: {choice} is not installed ({blas.install_hint(choice)})")
    variants = [v for v in variants if v not in missing]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results = []
    try:
        for round_ in range(args.runs):
            results.append({})
            for variant in variants:
                results[-1][variant] = run_variant(VARIANTS[variant], args)
                outcome = results[-1][variant]
                print(f"round {round_ + 1}, {variant}: " + (outcome if isinstance(outcome, str) else
                      f"{outcome['gflops']:.0f} GFLOP/s, training {outcome['training']['per_second']:.1f} tokens/s, "
                      f"answering {outcome['answering']['per_second']:.2f} records/s"), file=sys.stderr, flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{args.answer} shortest default questions answered in one batch; one LoRA epoch over the first "
          f"{args.train} default records; medians of {args.runs} rounds; ratios to {BASELINE!r} within each round"
          + (f"; {args.busy} core(s) kept busy by spinning processes" if args.busy else "") + "\n")
    print_table(results, variants)


if __name__ == "__main__":
    main()
