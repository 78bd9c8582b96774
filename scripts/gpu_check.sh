#!/usr/bin/env bash
# The GPU check in one command on a machine with an NVIDIA driver: a virtual environment from the repo's lock,
# then benchmarks/gpu_check.py, whose report (gpu-check.md, printed at the end) goes to OUT_DIR.
#
#   bash scripts/gpu_check.sh [OUT_DIR] [gpu_check.py options, e.g. --budget-s 300 --only training]
#
# OUT_DIR defaults to $OUT, else runs/gpu-check. Environment:
#   GPU_CHECK_VENV=DIR     the environment (default .venv-gpu; set up once, again when the lock changes)
#   GPU_CHECK_WHEELS=DIR   install offline from a folder of wheels (fill it where an index is reachable, with the
#                          target's Python: pip wheel -r requirements/lock.txt -w DIR; deepspeed is an sdist,
#                          so its wheel is built there)
#   GPU_CHECK_SETUP=none   skip the setup and run with $PYTHON as it is: an image that already has a CUDA torch
#                          and the rest the check imports (deepspeed, diffusers, transformers, omegaconf,
#                          webdataset, av, opencv, scipy, soundfile, Pillow, tqdm, numpy), and this repo on
#                          PYTHONPATH or installed
#   PYTHON=python3         the interpreter the environment is made from
#   GPU_CHECK_TIMEOUT=600  a hard limit (s) above the check's own budget: SIGINT, after which it still writes
#                          and prints the report of what it measured
# The environment also sees the interpreter's own site-packages, so a CUDA torch already installed at the
# lock's version is used as it is instead of being downloaded again.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu-check}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
VENV="${GPU_CHECK_VENV:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"
t0=$(date +%s)

driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) || driver=""
if [ -z "$driver" ]; then
  echo "gpu_check: nvidia-smi failed: no NVIDIA driver here (CPU rehearsal: gpu_check.py --dry-run)" >&2
  exit 2
fi
# The lock's torch is a CUDA 13.0 build, which needs driver 580 or newer.
if [ "${driver%%.*}" -lt 580 ] 2>/dev/null; then
  echo "gpu_check: warning: driver $driver is older than 580, which the lock's CUDA 13 torch needs" >&2
fi

if [ "${GPU_CHECK_SETUP:-lock}" = none ]; then
  py="$PYTHON"
else
  if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -m venv --system-site-packages "$VENV"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then  # Debian/Ubuntu ship venv separately
      rm -rf "$VENV"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv --system-site-packages "$VENV"
    else
      echo "gpu_check: '$PYTHON -m venv' failed; install python3-venv (or set GPU_CHECK_SETUP=none)" >&2
      exit 1
    fi
  fi
  py="$VENV/bin/python"
  stamp="$VENV/.gpu-check-stamp"
  want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    pip=("$py" -m pip install -q --disable-pip-version-check)
    [ -n "${GPU_CHECK_WHEELS:-}" ] && pip+=(--no-index --find-links "$GPU_CHECK_WHEELS")
    echo "gpu_check: installing requirements/lock.txt into $VENV" >&2
    "${pip[@]}" -r requirements/lock.txt
    "${pip[@]}" --no-deps -e .
    echo "$want" > "$stamp"
  fi
fi
echo "gpu_check: driver $driver, setup took $(( $(date +%s) - t0 )) s" >&2

. scripts/env.sh
export PYTHONUNBUFFERED=1
exec timeout -s INT -k 30 "${GPU_CHECK_TIMEOUT:-600}" "$py" benchmarks/gpu_check.py --out "$out" "$@"
