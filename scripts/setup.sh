#!/usr/bin/env bash
# One-command environment setup: a virtual environment in .venv, torch first, then the engine with its
# test extras, slicer-core with its pinned vtk, and the web shell (trame-slicer, Playwright) with the system
# browser and software-GL libraries it needs (Debian's chromium, Mesa EGL; apt-get when missing and allowed).
# Idempotent: a second run only checks a stamp.
#
#   scripts/setup.sh                 CPU torch on machines without an NVIDIA GPU, CUDA torch where there is one
#   TORCH_SPEC="torch==2.5.1" scripts/setup.sh      choose the torch you want
#   SYSTEM_SITE=1 scripts/setup.sh   reuse a torch (e.g. CUDA) already installed in the base Python
#   NO_APT=1 scripts/setup.sh        never call apt-get (the browser test then skips where chromium is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.drasclr-setup
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  if [ "${SYSTEM_SITE:-0}" = 1 ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: keeping torch $("$VENV/bin/python" -c 'import torch;print(torch.__version__)')"
elif [ -n "${TORCH_SPEC:-}" ]; then
  $PIP install -q "$TORCH_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing CUDA torch"
  $PIP install -q "torch>=2.2"
else
  # CPU-only machine: never pull CUDA packages. The local index/find-links may serve the +cpu build
  # directly; elsewhere the PyTorch CPU index does.
  $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
    || $PIP install -q "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu \
    || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
$PIP install -q -e ".[test,bridge,web,dicom]"
# The browser test drives Debian's chromium (Playwright's own browser download is not used) and the web shell
# renders through Mesa's software EGL. Install them when missing, as root with apt-get available.
missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
# DICOM: dciodvfy (dicom3tools), dcmtk and a real PACS (Orthanc + DICOMweb plugin) for the DICOM tests
for pkg in libegl-mesa0 libgl1-mesa-dri libegl1 dicom3tools dcmtk orthanc orthanc-dicomweb; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] && command -v dpkg >/dev/null 2>&1; then
  if [ "${NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get install ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; } || echo "setup: warning: could not install ${missing[*]} (browser/DICOM tests will skip)" >&2
  else
    echo "setup: note: ${missing[*]} missing and apt-get not used; the browser test will skip" >&2
  fi
fi
if "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-' && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup: warning: CUDA packages were installed on a machine without an NVIDIA GPU" >&2
fi
touch "$STAMP"
echo "setup: ready ($VENV)"
