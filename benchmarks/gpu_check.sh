#!/usr/bin/env bash
# The GPU path on a CUDA machine, from a bare checkout: tests/test_cuda.py (data on the device, augmentation and
# normalisation there, bf16-mixed, NCCL, the model served on the CPU), then one seed of the race with
# trainer.accelerator=auto (the default). Run from anywhere; it works in the checkout holding it.
#
#   bash benchmarks/gpu_check.sh                     # PyPI reachable: a venv with PyPI's torch==2.13.0 (a CUDA build)
#   CLFOPS_WHEELS=.whl bash benchmarks/gpu_check.sh  # no network: python3's own CUDA torch, and the packages it
#       lacks (mlflow, hydra-core, ...: every one, --no-deps) from the wheels in .whl/, on PYTHONPATH with src/
#
# Data: Fashion-MNIST in data/fashion_mnist/ (carry that folder, 30 MB: its four .gz files) is used as it is,
# without the network (from a machine with Debian's copy: mkdir -p data/fashion_mnist && cp
# /usr/share/datasets/fashion-mnist/*.gz data/fashion_mnist/); otherwise `clfops fetch` downloads it there. benchmarks/race.py needs the reference script
# (REFERENCE=path, default ../shared/bench/raw_reference.py, else shared/bench/raw_reference.py; skipped when
# absent), which reads /usr/share/datasets/fashion-mnist: as root, that path is linked to the data when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${CLFOPS_WHEELS:-}" ]; then
  PY=python3  # a venv made from it would not see its packages when it is a venv itself: PYTHONPATH instead
  SITE=${SITE:-/tmp/clfops-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$CLFOPS_WHEELS"/*.whl
  export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  VENV=${VENV:-.venv-gpu}
  PY=$VENV/bin/python
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
    "$PY" -m pip install -q torch==2.13.0  # Linux's PyPI torch is the CUDA build; constraints.txt pins the CPU one
    grep -v '^torch==' constraints.txt >"$VENV/constraints-gpu.txt"
    "$PY" -m pip install -q -c "$VENV/constraints-gpu.txt" -e . pytest pytest-timeout
  fi
fi
"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():  # tests/test_cuda.py would only skip: say so and stop
    sys.exit(f"torch {torch.__version__} sees no CUDA device: nothing to check here")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF

DATA=$("$PY" -m clfops.cli fetch fashion_mnist --root data/fashion_mnist | sed 's/^fashion_mnist: //')
DATA=$(realpath "$DATA")
if [ ! -e /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ]; then
  mkdir -p /usr/share/datasets && ln -s "$DATA" /usr/share/datasets/fashion-mnist
fi

"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py

REFERENCE=${REFERENCE:-../shared/bench/raw_reference.py}
[ -f "$REFERENCE" ] || REFERENCE=shared/bench/raw_reference.py
if [ -f "$REFERENCE" ]; then
  "$PY" benchmarks/race.py --seeds 0 --reference "$REFERENCE" -- trainer.accelerator=auto "data.root=$DATA"
else
  echo "no reference script (REFERENCE=...): race skipped"
fi
