#!/usr/bin/env bash
# Create (or refresh) the development environment at .venv: every component, editable, plus the
# test tools. Idempotent: does nothing when the pins have not changed since the last run.
#
#   TORCH_INDEX_URL  where torch/torchvision come from (default: PyPI). For small CPU-only wheels:
#                    TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#   PYTHON           the interpreter to build the venv with (default: python3; 3.11 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.editbench-installed
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
COMPONENTS=(-e shared_schemas -e "service_kit[models]" -e "tiny_models[diffusers]" -e editor_service
    -e reward_service -e orchestrator)

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"editbench needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
PY

fingerprint=$(cat */pyproject.toml requirements-dev.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$fingerprint" ]]; then
    exit 0
fi

echo "==> creating $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "==> installing ${TORCH_PINS[*]}${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
"$VENV/bin/pip" install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_PINS[@]}"
echo "==> installing the editbench components and test tools"
"$VENV/bin/pip" install --quiet "${COMPONENTS[@]}" -r requirements-dev.txt
echo "$fingerprint" > "$STAMP"
echo "==> $VENV is ready"
