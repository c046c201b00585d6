#!/usr/bin/env bash
# Runs the clove_sdk Python test suite against a freshly built kernel.
#
#   sdk-python/tests/run.sh [pytest args...]
#
# From a clean clone with only cargo and python3 installed: creates a venv (default
# <repo>/target/py-venv, reused if present; override with $CLOVE_PY_VENV), installs ./sdk-python
# and pytest into it, builds clove-kernel (`cargo build -p clove-kernel`) and runs pytest on
# sdk-python/tests with CLOVE_KERNEL_BIN set. Extra arguments go to pytest. Uses the caller's
# $CARGO_TARGET_DIR (default <repo>/target) for both builds; $PYTHON picks the interpreter that
# creates the venv (default python3). Sandboxed SPAWN needs root: as another user, the tests
# that spawn agents are skipped (with the reason).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
VENV="${CLOVE_PY_VENV:-$REPO/target/py-venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '\n==> %s\n' "$*" >&2; }

cd "$REPO"

if [[ -x "$VENV/bin/python" ]]; then
    say "reusing the venv $VENV"
else
    say "creating the venv $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

say "installing ./sdk-python and pytest into $VENV (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./sdk-python
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check pytest

say "building the kernel: cargo build -p clove-kernel"
cargo build -p clove-kernel

export CLOVE_KERNEL_BIN="$CARGO_TARGET_DIR/debug/clove-kernel"
if [[ ! -x "$CLOVE_KERNEL_BIN" ]]; then
    echo "error: $CLOVE_KERNEL_BIN missing after cargo build" >&2
    exit 1
fi

if [[ "$(id -u)" != 0 ]]; then
    say "not root: the tests that spawn sandboxed agents will be skipped"
fi

say "running pytest on sdk-python/tests (kernel: $CLOVE_KERNEL_BIN)"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -ra sdk-python/tests "$@"
