"""Make MLX's CPU backend fast on Linux: choose the BLAS, and its threads, before mlx is imported.

MLX's Linux wheel links a slow reference BLAS (about 5 GFLOP/s for a float32 matmul on two
cores). Loading an optimised BLAS into the global symbol scope *before* `mlx` is imported makes
the same matmul about 30x faster, because the dynamic linker then resolves `cblas_sgemm` to it.
This module has no imports of mlx on purpose: `setup()` runs before anything imports mlx, where the
command starts (`__main__`) and first in a script of the user's own. Importing does nothing.

SLEARN_MLX_BLAS names the choice: one of LIBRARIES, `reference` (the wheel's own BLAS, to
measure what the others are worth) or `auto` (unset: the first of PREFERENCE installed here).
Each library gets the thread settings of `threads()` unless the user set that variable already.
What was loaded, with which settings and by which rule, and which library `cblas_sgemm` resolves
to, is kept in `loaded` for versions.json. `python -m benchmarks.blas` measures the choices against each other.
"""

import ctypes
import ctypes.util
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

MULTIARCH = Path("/usr/lib") / (sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu")

# Where each library is: Debian's packages install every build side by side under the multiarch
# folder; the `mkl` wheel from PyPI puts libmkl_rt into the Python prefix's lib folder.
LIBRARIES = {
    "openblas": [MULTIARCH / "openblas-pthread/libopenblas.so.0", "openblas"],
    "openblas-openmp": [MULTIARCH / "openblas-openmp/libopenblas.so.0"],
    "blis": [MULTIARCH / "blis-pthread/libblis.so.4"],
    "blis-openmp": [MULTIARCH / "blis-openmp/libblis.so.4"],
    "mkl": [Path(sys.prefix) / "lib/libmkl_rt.so.2", Path(sys.prefix) / "lib/libmkl_rt.so.3", "mkl_rt"],
}
# The Debian package that provides each library, for the hint when it is missing.
PACKAGES = {"openblas": "libopenblas0-pthread", "openblas-openmp": "libopenblas0-openmp",
            "blis": "libblis4-pthread", "blis-openmp": "libblis4-openmp"}
# OpenBLAS's pthread build was the fastest library measured here, in training and in answering; BLIS,
# MKL and OpenBLAS's OpenMP build were slower on this CPU (README, "The BLAS").
PREFERENCE = ["openblas"]
# The variables through which these libraries and their OpenMP runtimes read their thread settings.
THREAD_VARIABLES = ("OPENBLAS_", "GOTO_", "OMP_", "GOMP_", "KMP_", "BLIS_", "MKL_")

# {"choice", "library", "settings", "set_by_slearn_mlx", "threads_rule", "cblas_sgemm"} once loaded; None otherwise.
loaded: dict | None = None


def find(choice: str) -> str | None:
    """The path of a library choice on this machine, or None."""
    for candidate in LIBRARIES[choice]:
        if isinstance(candidate, Path):
            if candidate.exists():
                return str(candidate)
        elif found := ctypes.util.find_library(candidate):
            return found
    return None


def install_hint(choice: str) -> str:
    if choice == "mkl":
        return "pip install mkl"
    return f"sudo apt-get install {PACKAGES[choice]}"


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def sgemm_provider() -> str | None:
    """The file `cblas_sgemm` resolves to in the global scope, which is where libmlx looks first."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
    except AttributeError:
        return None
    info = DlInfo()
    if not process.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return info.dli_fname.decode()


def chosen(environ=os.environ) -> tuple[str, str | None]:
    """(choice, path): the user's SLEARN_MLX_BLAS, else the first of PREFERENCE found here."""
    name = environ.get("SLEARN_MLX_BLAS", "auto")
    if name == "reference":
        return name, None
    if name != "auto":
        if name not in LIBRARIES:
            raise ValueError(f"SLEARN_MLX_BLAS={name}: not one of auto, reference, {', '.join(LIBRARIES)}")
        return name, find(name)
    for name in PREFERENCE:
        if path := find(name):
            return name, path
    return PREFERENCE[0], None


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot, from Linux's /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


def busy_cores(window: float = 0.1) -> float:
    """Cores other work keeps busy now: the share of CPU time spent over a short window that this
    process sleeps through. Not the load average: it remembers the last minute, so a run started
    just after another (a benchmark's next variant, a second adapt) read its predecessor's load
    and took one thread for its whole length."""
    before = cpu_times()
    if before is None:
        return os.getloadavg()[0]
    time.sleep(window)
    busy, total = (after - first for after, first in zip(cpu_times(), before))
    return (os.cpu_count() or 1) * busy / total if total else 0.0


# Where OpenBLAS's pthread build reads its thread count from, the first set winning: a user's setting of any stands.
OPENBLAS_THREAD_COUNT = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def threads(choice: str, environ=os.environ) -> tuple[dict[str, str], str]:
    """OpenBLAS threads: one per core other work leaves free; with the rule that gave them. Its threads
    spin while MLX's own thread works between matrix products; with a core kept busy by other work,
    one thread trained 3.5 times as fast as two and answered 2.9 times as fast, where on an idle machine
    the second thread was worth 1.2-1.3x (README, "The BLAS"): taking other work for lasting costs far
    less than missing it. The other libraries keep their own defaults."""
    if choice != "openblas":
        return {}, f"{choice}'s own default"
    if given := next((name for name in OPENBLAS_THREAD_COUNT if name in environ), None):
        return {}, f"the user's {given}"
    busy = busy_cores()
    free = max(1, (os.cpu_count() or 1) - int(busy + 0.5))
    return {"OPENBLAS_NUM_THREADS": str(free)}, f"one per free core: {busy:.1f} of {os.cpu_count()} busy at the start"


def apply_threads(settings: dict[str, str], environ=os.environ) -> list[str]:
    """Set the settings the user has not set; return the names set here."""
    ours = [k for k in settings if k not in environ]
    for k in ours:
        environ[k] = settings[k]
    return ours


def setup() -> dict | None:
    """Load the chosen BLAS globally on Linux, with its threads; return what was loaded, or None (and say
    why). Call it before anything imports mlx; once is enough, and elsewhere than Linux it does nothing."""
    global loaded
    if platform.system() != "Linux" or loaded:
        return loaded
    choice, path = chosen()
    if choice == "reference":
        return None
    if "mlx.core" in sys.modules:
        # Too late to change which BLAS mlx resolved; say so rather than pretend.
        print("slearn-mlx: mlx was imported before slearn_mlx.blas.setup(); no BLAS loaded, MLX keeps its "
              "slow reference BLAS", file=sys.stderr)
        return None
    if path is None:
        if not os.environ.get("SLEARN_QUIET_BLAS"):
            print(f"slearn-mlx: {choice} not found, MLX will use its slow reference BLAS on this CPU; "
                  f"install it with: {install_hint(choice)}", file=sys.stderr)
        return None
    settings, rule = threads(choice)
    ours = apply_threads(settings)  # before loading: the libraries read them once, when they start
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    loaded = {"choice": choice, "library": path,
              "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_VARIABLES)},
              "set_by_slearn_mlx": ours, "threads_rule": rule, "cblas_sgemm": sgemm_provider()}
    return loaded
