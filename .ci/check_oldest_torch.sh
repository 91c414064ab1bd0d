#!/usr/bin/env bash
# Builds fused_act CPU-only against the oldest supported torch (default 2.4.1; or the
# version given as $1) in a separate virtual environment, installs it as a wheel and runs
# the test suite against that install (CPU tests; CUDA tests too where a GPU is present).
#
#   .ci/check_oldest_torch.sh [TORCH_VERSION]
#
# Environment: CHECK_DIR (default: a new temporary folder) holds the virtual environment,
# a copy of the sources and the build; an existing CHECK_DIR/venv-torch<version> is reused.
# PYTEST_ARGS (default "-q") go to pytest.  It downloads torch (about 2.5 GB with its CUDA
# 12 libraries for 2.4.1), so it is not part of .ci/run.
set -euo pipefail
TORCH_VERSION="${1:-2.4.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHECK_DIR="${CHECK_DIR:-$(mktemp -d)}"
VENV="$CHECK_DIR/venv-torch$TORCH_VERSION"
SRC="$CHECK_DIR/src"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

stamp "torch $TORCH_VERSION in $VENV"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet "torch==$TORCH_VERSION" -r "$ROOT/requirements.txt"
python -c "import torch; print('torch', torch.__version__)"

stamp "copying the sources to $SRC"
rm -rf "$SRC" && mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - ) \
  | tar -xf - -C "$SRC"

stamp "building and installing fused_act (CPU kernels only)"
(cd "$SRC" && FUSED_ACT_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
   python -m pip install --quiet --no-build-isolation --force-reinstall --no-deps .)

# Run from outside the source folder, so that the installed package is the one tested.
stamp "tests"
cd "$CHECK_DIR"
python -m fused_act
# shellcheck disable=SC2086
python -m pytest ${PYTEST_ARGS:--q} -p no:cacheprovider "$SRC/tests"
stamp "done"
