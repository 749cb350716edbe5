"""Benchmarks, run by hand (`python -m benchmarks.NAME`); each says what it ran and where."""

import os
import platform
import sys
from pathlib import Path


def print_provenance(module: str) -> None:
    """The command as typed and the machine and software it ran on: the first lines of every output."""
    from slearn_mlx.run import versions

    print("command:", " ".join([Path(sys.executable).name, "-m", module, *sys.argv[1:]]))
    print("machine:", platform.platform(), platform.processor() or "", os.cpu_count(), "cpus", versions())
