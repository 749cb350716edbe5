"""Make MLX's CPU backend fast on Linux.

MLX's Linux wheel links a slow reference BLAS (about 5 GFLOP/s for a float32
matmul on two cores). Loading Debian's OpenBLAS into the global symbol scope
*before* `mlx` is imported makes the same matmul about 30x faster, because the
dynamic linker then resolves `cblas_sgemm` to OpenBLAS. This module has no
imports of mlx on purpose: `slearn_mlx/__init__.py` runs it first.
SLEARN_MLX_BLAS=reference leaves the wheel's own BLAS, to measure what OpenBLAS is worth.
"""

import ctypes
import ctypes.util
import os
import platform
import sys

INSTALL_HINT = (
    "slearn-mlx: OpenBLAS not found, MLX will use its slow reference BLAS on this CPU; "
    "install it with: sudo apt-get install libopenblas0-pthread"
)

loaded_openblas: str | None = None


def preload_openblas() -> str | None:
    """Load OpenBLAS globally on Linux; return its path, or None (and say how to get it)."""
    global loaded_openblas
    if platform.system() != "Linux" or loaded_openblas or os.environ.get("SLEARN_MLX_BLAS") == "reference":
        return loaded_openblas
    if "mlx.core" in sys.modules:
        # Too late to change which BLAS mlx resolved; say so rather than pretend.
        print("slearn-mlx: mlx was imported before slearn_mlx; OpenBLAS not preloaded", file=sys.stderr)
        return None
    if name := ctypes.util.find_library("openblas"):
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        loaded_openblas = name
        return name
    if not os.environ.get("SLEARN_QUIET_BLAS"):
        print(INSTALL_HINT, file=sys.stderr)
    return None
