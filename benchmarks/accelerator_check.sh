#!/bin/bash
# The train step's figures on this machine's accelerator (benchmarks/accelerator_check.py):
#   bash benchmarks/accelerator_check.sh [OUT_DIR] [flags of accelerator_check.py]
# writes OUT_DIR/accelerator_check.json and .txt (default OUT_DIR: $OUT, else
# ./accelerator_check). Needs jax, flax, optax and ml_collections; where ml_collections
# is not installed and there is no network, a wheel in ./wheels is used
# (pip download ml-collections --no-deps -d wheels, on a machine with network).
set -euo pipefail
out="${OUT:-accelerator_check}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then  # A first argument that is not a flag.
  out="$1"
  shift
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # Relative to where the command was given.
cd "$(dirname "$0")/.."
# The PyTorch reference runs beside this process: JAX must not take most of the GPU first.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python=${PYTHON:-python3}
if ! "$python" -c 'import ml_collections' 2>/dev/null; then
  wheel=$(ls wheels/ml_collections-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "error: ml_collections is not installed and wheels/ has no ml_collections wheel:" \
         "pip install ml-collections, or pip download ml-collections --no-deps -d wheels" >&2
    exit 1
  fi
  export PYTHONPATH="$PWD/$wheel${PYTHONPATH:+:$PYTHONPATH}"  # A pure-Python wheel imports as a zip.
fi
"$python" benchmarks/accelerator_check.py --json "$out/accelerator_check.json" "$@" \
  | tee "$out/accelerator_check.txt"
