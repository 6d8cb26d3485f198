#!/usr/bin/env bash
# Installs everything napari-cellseg needs on a fresh Debian/Ubuntu machine:
# the system libraries napari's Qt 6 / OpenGL viewer asks for (with Xvfb for
# headless use), a virtual environment in .venv, and the project with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends \
    xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libdbus-1-3 libfontconfig1 \
    libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
    libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 \
    libxrender1 libxi6 >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip

# PyTorch's build for this machine. torch and torchvision go first, as a matching pair (a lone
# torchvision from the index may not fit the torch on disk).
#  - an NVIDIA GPU (nvidia-smi answers): the default build from the package index, with CUDA;
#  - no GPU: the CPU-only build from PyTorch's own index (about 2.6 GB of environment instead of 7 GB,
#    3 GB of which would be CUDA libraries), if that index answers within 15 s; otherwise (a machine
#    that reaches only the package registry) the default build, which also runs on the CPU.
# TORCH_BUILD=cpu|default|auto (default auto) overrides the choice.
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
TORCH_BUILD="${TORCH_BUILD:-auto}"
if [ "$TORCH_BUILD" = "auto" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TORCH_BUILD=default
  else
    TORCH_BUILD=cpu
  fi
fi

cpu_index_answers() {
  # pip carries on past an index it cannot reach, so ask first, quickly
  .venv/bin/python - "$TORCH_CPU_INDEX" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=15).close()
except Exception as exc:
    print(f"  ({type(exc).__name__}: {exc})")
    sys.exit(1)
PY
}

if [ "$TORCH_BUILD" = "cpu" ]; then
  echo "no NVIDIA GPU found (or TORCH_BUILD=cpu): asking $TORCH_CPU_INDEX for PyTorch's CPU-only build"
  # torch and torchvision alone from PyTorch's index (--no-deps: nothing else may come from there,
  # and a version it lacks cannot be taken from the default index instead); their dependencies next
  if ! { cpu_index_answers &&
         .venv/bin/pip install -q --timeout 15 --retries 0 --no-deps --index-url "$TORCH_CPU_INDEX" \
           "${TORCH_PINS[@]}"; }; then
    echo "the CPU-only build is not available here: installing PyTorch's default build (it runs on the CPU too)"
  fi
fi
# the default build where none is installed yet, and the dependencies of an installed CPU-only build
.venv/bin/pip install -q "${TORCH_PINS[@]}"
.venv/bin/python -c "import torch; print('PyTorch', torch.__version__, '(CUDA ' + torch.version.cuda + ' build)' if torch.version.cuda else '(CPU-only build)', '- GPU available' if torch.cuda.is_available() else '- no GPU in use')"

.venv/bin/pip install -q -e ".[testing]"
echo "napari-cellseg installed in .venv ($(du -sh .venv 2>/dev/null | cut -f1))"
