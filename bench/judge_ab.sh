#!/usr/bin/env bash
# The judge through the service, this tree against a baseline tree, on ONE machine, alternating
# (B A B ... : B = this tree, A = the baseline), so a change's effect is not mixed up with the
# difference between two GPUs of the same kind (5 % between two H100s on one day, round 3).
#
#     git archive BASE -- shared_schemas service_kit editor_service reward_service orchestrator \
#         bench | gzip > .baseline/BASE.tar.gz          # here, before the device call
#     bash bench/judge_ab.sh DEST .baseline/BASE.tar.gz [ROUNDS] [-- judge_bench.py options]
#
# Each run: bench/judge_bench.py of its own tree, --part service, single and viescore in expected
# mode, 320 items, 16 clients (round 2's and 3's figures), no hand-over. Each step is bounded by
# `timeout`; DEST/ab.log says which step ran when, DEST/<label>-<n>.json and .out hold the figures.
# The component sources come from PYTHONPATH: this script sets it per tree, after DEPS (a folder of
# installed wheels, if the machine needs one).
set -uo pipefail
dest=${1:?usage: bench/judge_ab.sh DEST BASELINE_TAR [ROUNDS] [-- judge_bench options]}
tarball=${2:?usage: bench/judge_ab.sh DEST BASELINE_TAR [ROUNDS] [-- judge_bench options]}
rounds=${3:-1}
shift 2
[ $# -gt 0 ] && [ "$1" != "--" ] && shift
[ "${1:-}" = "--" ] && shift
extra=("$@")
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
base=$(mktemp -d)
tar -xzf "$tarball" -C "$base"
log="$dest/ab.log"

tree_path() {  # the component source folders of a tree, for PYTHONPATH
  local tree=$1 parts=()
  for component in tiny_models shared_schemas service_kit editor_service reward_service orchestrator; do
    [ -d "$tree/$component/src" ] && parts+=("$tree/$component/src")
  done
  (IFS=:; echo "${parts[*]}${DEPS:+:$DEPS}")
}

run() {  # run LABEL TREE
  local label=$1 tree=$2 n=$3
  echo "[$(date +%T)] $label-$n: start ($tree)" | tee -a "$log"
  local began=$SECONDS
  (cd "$tree" && PYTHONPATH=$(tree_path "$tree") timeout --signal=TERM --kill-after=30 280 \
    python3 bench/judge_bench.py --part service --runs single/expected viescore/expected \
    --no-handover --items 320 --clients 16 "${extra[@]}" --out "$dest/$label-$n.json") \
    > "$dest/$label-$n.out" 2>&1
  echo "[$(date +%T)] $label-$n: rc=$? in $((SECONDS - began)) s" | tee -a "$log"
  grep -h '_items_per_s":' "$dest/$label-$n.out" | tail -1 | tee -a "$log"
}

for n in $(seq 1 "$rounds"); do
  run current "$here" "$n"
  run baseline "$base" "$n"
done
run current "$here" "$((rounds + 1))"
echo "[$(date +%T)] done" | tee -a "$log"
