#!/usr/bin/env bash
# Build the MONAI Label environment of this bundle, apart from the main .venv (MONAI Label 0.8.5 needs numpy 1.x
# and pydicom 2.x; the bundle's own pins are newer). Pins: bundle/monailabel/requirements.txt.
#
# usage: scripts/setup_monailabel.sh [VENV_DIR]        (default .venv-monailabel; PYTHON=python3.11 to choose)
# The build log goes to VENV_DIR/install.log; VENV_DIR/.installed marks a finished build (what `make` checks).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv-monailabel}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=bundle/monailabel/requirements.txt
MONAILABEL_VERSION=0.8.5
PIP_OPTIONS=(--disable-pip-version-check --no-input)

rm -f "$VENV/.installed"
"$PYTHON" -m venv "$VENV"
LOG="$VENV/install.log"
: >"$LOG"

step() {
    echo "+ $*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        echo "setup_monailabel: failed: $* (full log: $LOG)" >&2
        exit 1
    fi
}

echo "setup_monailabel: installing MONAI Label ${MONAILABEL_VERSION} into $VENV (log: $LOG)"
step "$VENV/bin/python" -m pip install "${PIP_OPTIONS[@]}" -r "$REQUIREMENTS"
# --no-deps: monailabel's own requirement list pulls sam2, mlflow and openslide, which this app does not use
step "$VENV/bin/python" -m pip install "${PIP_OPTIONS[@]}" --no-deps "monailabel==${MONAILABEL_VERSION}"
# the server, the stock bundle app's imports and this bundle's app must all import
step "$VENV/bin/python" -c "
import monailabel.main, monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle
import bundle.monailabel.infer, bundle.monailabel.main, bundle.monailabel.train
"
touch "$VENV/.installed"
echo "setup_monailabel: ready: $("$VENV/bin/python" -c 'import monailabel, monai, torch; print(
    f"monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}")')"
