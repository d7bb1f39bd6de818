#!/usr/bin/env bash
# Start a MONAI Label server on 127.0.0.1 that serves this bundle to 3D Slicer / OHIF.
#
# usage: scripts/start_monailabel.sh --studies DIR [--port 8000] [--app lmnet|stock] [--bundle-root DIR]
#                                    [--venv DIR] [-- MORE monailabel start_server ARGUMENTS]
#   --studies      folder of images (NIfTI, NRRD, PNG, JPG; labels go to DIR/labels/final), or a DICOMweb URL
#   --app lmnet    this bundle's own app (bundle/monailabel): models lmnet_lgg and lmnet_busi (default)
#   --app stock    MONAI Label's stock "monaibundle" app with the bundle in its model folder, as model "lmnet"
#   --bundle-root  the bundle to serve (default: this repository)
#   --venv         the MONAI Label environment (default: .venv-monailabel, see scripts/setup_monailabel.sh)
# e.g. scripts/start_monailabel.sh --studies /data/studies --port 8000 -- --conf models lgg
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

STUDIES="" PORT=8000 APP=lmnet BUNDLE_ROOT="$ROOT" VENV="${LMNET_MONAILABEL_VENV:-$ROOT/.venv-monailabel}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --studies) STUDIES="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --app) APP="$2"; shift 2 ;;
        --bundle-root) BUNDLE_ROOT="$(cd "$2" && pwd)"; shift 2 ;;
        --venv) VENV="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "start_monailabel: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$STUDIES" ]] || { echo "start_monailabel: --studies DIR is required" >&2; exit 2; }
MONAILABEL=("$VENV/bin/python" -m monailabel.main)  # not bin/monailabel: that runs the first python on PATH
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import monailabel" 2>/dev/null; then
    echo "start_monailabel: no MONAI Label environment at $VENV; build it with scripts/setup_monailabel.sh" >&2
    exit 1
fi
[[ "$STUDIES" == http://* || "$STUDIES" == https://* ]] || STUDIES="$(mkdir -p "$STUDIES" && cd "$STUDIES" && pwd)"

case "$APP" in
    lmnet)
        APP_DIR="$BUNDLE_ROOT/bundle/monailabel"
        CONF=(--conf bundle_root "$BUNDLE_ROOT")
        ;;
    stock)
        APP_DIR="$BUNDLE_ROOT/outputs/monailabel/apps/monaibundle"
        if [[ ! -f "$APP_DIR/main.py" ]]; then  # a copy of the sample app installed with MONAI Label
            "${MONAILABEL[@]}" apps --download --name monaibundle --output "$(dirname "$APP_DIR")" >/dev/null
        fi
        mkdir -p "$APP_DIR/model"
        ln -sfn "$BUNDLE_ROOT" "$APP_DIR/model/lmnet"
        # zoo_source github: do not list the model zoo online; sam2 false: no SAM 2 download
        CONF=(--conf models lmnet --conf zoo_source github --conf sam2 false)
        ;;
    *) echo "start_monailabel: --app must be lmnet or stock, got '$APP'" >&2; exit 2 ;;
esac

cd "$BUNDLE_ROOT"
exec "${MONAILABEL[@]}" start_server --app "$APP_DIR" --studies "$STUDIES" --host 127.0.0.1 --port "$PORT" \
    "${CONF[@]}" "$@"
