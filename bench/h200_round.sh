#!/usr/bin/env bash
# Every GPU figure of docs/PERFORMANCE.md's second round, in one go, on one GPU (H200: ~18 min).
#
#     bash bench/h200_round.sh DEST
#
# Runs one step after another, each bounded by `timeout`, each writing its JSON record and logs
# into DEST (a step that fails is noted in DEST/round.log and the next one runs):
#   1. the editor's modes through the service (lossless, FP8, the step cache):
#      50-step true CFG, 8 and 4 steps, PSNR/SSIM against lossless
#   2. a whole run, `editbench run --share-gpu`, 54 items, both services on random-full
#   3. the judge through the service, 320 items, single and viescore
#   4. the editor's GPU determinism test (the same request bit-identical on two workers)
# The device's time is short and a call is limited to 10 minutes, so this is meant to be started
# detached (`setsid bash bench/h200_round.sh DEST > DEST.log 2>&1 &`) and DEST collected by later
# calls; DEST/done appears at the end.
set -uo pipefail
dest=${1:?usage: bench/h200_round.sh DEST}
mkdir -p "$dest"
cd "$(dirname "$0")/.."
log="$dest/round.log"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "[$(date +%T)] $name: start" | tee -a "$log"
  local began=$SECONDS
  timeout --signal=TERM --kill-after=30 "$limit" "$@" > "$dest/$name.out" 2>&1
  local rc=$?
  echo "[$(date +%T)] $name: rc=$rc in $((SECONDS - began)) s" | tee -a "$log"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, transformers, diffusers; print(torch.__version__, transformers.__version__, diffusers.__version__)'
  git log -1 --format='%H %s' 2>/dev/null || true
} > "$dest/gpu.txt" 2>&1

# `nondeterministic` (what determinism costs the editor) runs if the budget allows; `cudnn` is another.
step editor-modes 600 python3 bench/editor_bench.py --part modes \
  --modes lossless fp8-row cache4 nondeterministic --budget-s 380 --mode-reserve-s 90 \
  --out "$dest/editor-modes.json"
step whole-run 480 python3 bench/whole_run.py --items 54 --out "$dest/whole-run.json"
step judge-service 330 python3 bench/judge_bench.py --part service \
  --runs single/expected viescore/expected --items 320 --no-handover \
  --out "$dest/judge-service.json"
# torchao's sources warn when compiled, and pytest turns warnings into errors: compile them first.
python3 -m compileall -q "$(python3 -c 'import torchao, os; print(os.path.dirname(torchao.__file__))')" \
  > /dev/null 2>&1 || true
step editor-gpu-determinism 330 python3 -m pytest -m gpu -p no:cacheprovider -q \
  tests/editor/test_gpu_determinism.py
touch "$dest/done"
