#!/usr/bin/env bash
# Every GPU figure of docs/PERFORMANCE.md's third round (issue 30), in one go, on one GPU.
#
#     bash bench/gpu_round3.sh DEST            # H100: ~21 min
#     QUICK=1 bash bench/gpu_round3.sh DEST    # CPU smoke test on the tiny models (every step)
#
# Runs one step after another, each bounded by `timeout`, each writing its JSON record and logs
# into DEST (a step that fails is noted in DEST/round.log and the next one runs):
#   1. editor-profile: in-process, diffusers' attention processor (the default) vs the fused one,
#      both compiled: phases of a true-CFG edit, 8-step edits, two transformer forwards under the
#      torch profiler (kernels by kind, top kernels, FLOP rates, Chrome traces), PSNR
#   2. editor-modes: through the service, 50-step true CFG, 8 and 4 steps, PSNR/SSIM against the
#      first mode: the default (compiled, diffusers' processor), the fused joint attention, and the
#      default with the text encoder parked in host memory (peak memory vs a copy per edit)
#   3. judge: in-process (one batch per protocol profiled) and through the service, 320 items,
#      16 clients, single and viescore
#   3b. judge-prepare: a judge batch's preparation alone (bench/judge_prepare.py: the random-full
#      processor, 1024x1024 single items): decode, pipe, templates, image processor, tokens, on
#      the default stream and on a side stream, with the GPU idle and busy (a stand-in model)
#   4. whole-run: `editbench run --share-gpu`, 54 items, 8 steps no CFG, viescore, the services'
#      defaults (the editor compiles by default now)
# and, by name only (STEPS below):
#   judge-variants: the judge through the service, transformers' eager layers against the
#      defaults, or the variants JUDGE_VARIANTS names (judge_bench.py's names or NAME=JSON without
#      spaces), one after the other on this machine, 320 items
#   judge-profile: one compiled batch per protocol in-process under the torch profiler
#   judge-prefix: viescore with the questions folded onto their prefixes' caches and their common
#      text in the prefix (the defaults) against `copied` and `common-off`, through the service
#      (320 items), then the model alone (its record has items/s per prefix_passes)
#   families: random-full FLUX.1 Kontext and LongCat through the service (bench/families_bench.py)
#   judge-deterministic-compiled: the GPU test of deterministic mode (every answer bit-identical
#      however requests are grouped) with the judge compiled (REWARD_BACKEND_OPTIONS compile)
#
#     STEPS="whole-run judge-variants" bash bench/gpu_round3.sh DEST   # only these, in this order
# The device's time is short and a call is limited to 10 minutes, so this is meant to be started
# detached (`setsid bash bench/gpu_round3.sh DEST > DEST.log 2>&1 &`) and DEST collected by later
# calls; DEST/done appears at the end.
set -uo pipefail
dest=${1:?usage: bench/gpu_round3.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
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
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no GPU"
  python3 -c 'import torch, transformers, diffusers; print(torch.__version__, transformers.__version__, diffusers.__version__, torch.backends.cudnn.version())'
  git log -1 --format='%H %s' 2>/dev/null || true
} > "$dest/gpu.txt" 2>&1

if [ -n "${QUICK:-}" ]; then  # tiny models, tiny counts: every step's code path in minutes
  model=tiny
  profile_args=(--side 64 --steps 3 --fast-steps 2 --repeats 1)
  modes_args=(--side 64 --steps 3 --fast-steps 2 --fewest-steps 2 --warmup-steps 2 --repeats 1)
  judge_args=(--side 64 --items 8 --in-process-items 4 --clients 2)
  prepare_args=(--side 64 --items 8 --rounds 1 --threads 1)
  run_args=(--items 4 --side 64 --steps 2)
  families_args=(--families tiny-kontext tiny-longcat --side 64 --steps 2 --budget-s 120)
else
  model=random-full
  profile_args=(--steps 20 --repeats 1)
  modes_args=(--budget-s 480 --mode-reserve-s 160)
  judge_args=(--items 320 --clients 16)
  prepare_args=(--items 64 --rounds 1 --busy --threads 1 2)
  run_args=(--items 54)
  families_args=(--budget-s 280)
fi

run_step() {  # run_step NAME: one of the steps below
  case $1 in
    editor-profile) step editor-profile 420 python3 bench/editor_profile.py --model "$model" \
      "${profile_args[@]}" --out-dir "$dest/editor-profile" ;;
    editor-modes) step editor-modes 570 python3 bench/editor_bench.py --part modes --model "$model" \
      --modes lossless fused parked "${modes_args[@]}" --out "$dest/editor-modes.json" ;;
    judge) step judge 480 python3 bench/judge_bench.py --model "$model" --part in-process service \
      --runs single/expected viescore/expected --no-handover "${judge_args[@]}" \
      --profile-dir "$dest/judge-profile" --out "$dest/judge.json" ;;
    judge-prepare) step judge-prepare 240 python3 bench/judge_prepare.py "${prepare_args[@]}" \
      --out "$dest/judge-prepare.json" ;;
    whole-run) step whole-run 480 python3 bench/whole_run.py --model "$model" "${run_args[@]}" \
      --out "$dest/whole-run.json" ;;
    judge-variants)  # ~3.5 min a variant on an H100 (a service start, both protocols)
      local variants=(${JUDGE_VARIANTS:-eager defaults})
      step judge-variants $((60 + 240 * ${#variants[@]})) python3 bench/judge_bench.py \
      --model "$model" --part service --variants "${variants[@]}" \
      --runs single/expected viescore/expected --no-handover "${judge_args[@]}" \
      --out "$dest/judge-variants.json" ;;
    judge-profile) step judge-profile 300 python3 bench/judge_bench.py --model "$model" \
      --part in-process --runs single/expected viescore/expected --no-handover \
      "${judge_args[@]}" --profile-dir "$dest/judge-profile" --out "$dest/judge-profile.json" ;;
    judge-prefix)
      step judge-prefix 540 python3 bench/judge_bench.py --model "$model" --part service \
        --variants defaults copied common-off --runs viescore/expected --no-handover \
        "${judge_args[@]}" --out "$dest/judge-prefix.json"
      step judge-prefix-model 300 python3 bench/judge_bench.py --model "$model" \
        --part in-process --no-handover --in-process-items 40 "${judge_args[@]}" \
        --out "$dest/judge-prefix-model.json" ;;
    families) step families 330 python3 bench/families_bench.py "${families_args[@]}" \
      --out "$dest/families.json" ;;
    judge-deterministic-compiled) step judge-deterministic-compiled 300 \
      env REWARD_BACKEND_OPTIONS='{"compile": true}' python3 -m pytest -m gpu -q -p no:cacheprovider \
      tests/reward/test_gpu_deterministic_service.py ;;
    *) echo "unknown step: $1" | tee -a "$log" ;;
  esac
}

for name in ${STEPS:-editor-profile editor-modes judge judge-prepare whole-run}; do
  run_step "$name"
done
touch "$dest/done"
exit 0
