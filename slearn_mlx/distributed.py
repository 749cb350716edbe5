"""Several processes on one run folder, started by `mlx.launch` (MLX's own distributed runtime).

Every rank answers its share of the records (every Nth, of the records left to answer) and
trains data-parallel (train.py splits each batch and averages gradients over the ranks).
Only rank 0 writes the shared run files; the other ranks wait for it at a barrier, so every
rank reads the same files afterwards. The run folder must be at the same path on every host
(a shared filesystem). Outside mlx.launch the world is one process and all this is a no-op.
`launch_here` starts the same command as several ranks on this machine, one BLAS thread each.
"""

import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

import mlx.core as mx

from .progress import Progress


@cache
def world():
    return mx.distributed.init()


def rank() -> int:
    return world().rank()


def size() -> int:
    return world().size()


def is_main() -> bool:
    return rank() == 0


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one, so that all ranks take the same branch."""
    if size() == 1:
        return flag
    return mx.distributed.all_sum(mx.array(float(flag)), stream=mx.cpu).item() > 0


def barrier() -> None:
    any_rank(False)


def on_main(fn, *args, **kwargs) -> None:
    """fn runs on rank 0 alone (it writes shared files); every rank waits until it is done.

    When it fails, rank 0 exits with the error and mlx.launch stops the waiting ranks.
    """
    if is_main():
        fn(*args, **kwargs)
    barrier()


def progress(iterable=None, **options) -> Progress:
    """Progress shown by rank 0 alone: a bar on a terminal, lines in a log (progress.py)."""
    return Progress(iterable, shown=is_main(), **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_here(processes: int, argv: list[str]) -> int:
    """Run `python -m slearn_mlx ARGV` as `processes` ranks on this machine through mlx.launch's ring
    backend over loopback, and return its exit status. Each rank gets one BLAS thread, unless the user
    set the count: the ranks, not the BLAS's threads, keep the cores busy."""
    env = dict(os.environ)
    if not any(name in env for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")):
        env["OPENBLAS_NUM_THREADS"] = "1"
    launcher = Path(sys.executable).with_name("mlx.launch")
    command = [str(launcher), "-n", str(processes), "--backend", "ring", "--starting-port", str(free_port()),
               "--", sys.executable, "-m", "slearn_mlx", *argv]
    return subprocess.call(command, env=env)
