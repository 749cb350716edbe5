"""Records per second of the diagnosis through an OpenAI-compatible server, by concurrency.

Starts mlx_lm.server on 127.0.0.1 with the model, answers and grades the same records at each
concurrency (greedy, the diagnosis' own token budgets), and stops the server; then the same
records in-process, for reference. On a Linux CPU, give the server a float32 model
(`python -m mlx_lm convert --hf-path M --mlx-path M-f32 -d --dtype float32`): it runs the
weights as stored, and quantized weights are slow on MLX's CPU backend.

    python -m benchmarks.server [DATA] [--limit 64] [--model M] [--concurrency 1,4,16]
"""

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from os import environ
from pathlib import Path

from benchmarks import print_provenance
from slearn_mlx import blas

blas.setup()  # OpenBLAS before mlx, as the command does (SLEARN_MLX_BLAS=reference keeps the wheel's)

from slearn_mlx.distributed import free_port
from slearn_mlx.answer import in_process
from slearn_mlx.data import default_dataset, load_records
from slearn_mlx.resumable_rows import answer_and_grade
from slearn_mlx.grade import auto_grade
from slearn_mlx.models import load_model, resolve_model
from slearn_mlx.backends import Backend, answer_on_server



def wait_until_up(proc, port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("mlx_lm.server exited before answering")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"mlx_lm.server did not answer within {timeout:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(default_dataset()))
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--model")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    print_provenance("benchmarks.server")

    records = load_records(Path(args.data))[: args.limit]
    model_path = resolve_model(args.model)
    port = free_port()
    # The server gets the fast BLAS this process has (blas.py), so the comparison is of the serving only.
    env = {**environ, "LD_PRELOAD": blas.loaded["library"]} if blas.loaded else None
    proc = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", str(model_path),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    results = []
    try:
        wait_until_up(proc, port)
        backend = Backend("openai", f"http://127.0.0.1:{port}/v1")
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                # One batch of all records, so that only the concurrency bounds the requests in flight.
                answer = lambda batch, temperature=0.0: answer_on_server(backend, batch, temperature, concurrency)  # noqa: E731
                rows = answer_and_grade(answer, records, Path(tmp) / "rows.jsonl", auto_grade, len(records),
                                        f"concurrency {concurrency}")
                seconds = time.perf_counter() - start
            results.append((concurrency, seconds, sum(r["correct"] for r in rows)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    model, tokenizer = load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rows = answer_and_grade(in_process(model, tokenizer), records, Path(tmp) / "rows.jsonl", auto_grade, 64, "in-process")
        results.append(("in-process, batches of 64", time.perf_counter() - start, sum(r["correct"] for r in rows)))

    print(f"\n{len(records)} records of {args.data}, model {model_path.name}, mlx_lm.server on 127.0.0.1")
    print("| concurrent requests | seconds | records/s | correct |")
    print("|---|---|---|---|")
    for concurrency, seconds, correct in results:
        print(f"| {concurrency} | {seconds:.1f} | {len(records) / seconds:.2f} | {correct} |")


if __name__ == "__main__":
    main()
