#!/usr/bin/env bash
# Seed Keras job (Dense(64, relu) -> Dense(1, sigmoid), Adagrad, 1000x20, batch 32, 50 epochs)
# samples/s, whole process (ps-launch start to exit, servers and workers included), for
# 1 server + 1 worker and 1 server + 2 workers, runs interleaved so both see the same machine;
# medians of RUNS runs. Then PyTorch 1.13 on the same model in the same run
# (tests/bench/torch_seed.py, 1 thread), timed two ways: its training loop only, and its whole
# process as ps is timed (start, import, run, exit); the ratios to each.
#   tests/bench/bench_seed.sh [BUILD_DIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-release}
runs=${2:-7}
job=examples/keras_seed.json
samples=50000 # 50 epochs x 1000 rows

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for _ in $(seq "$runs"); do
  for workers in 1 2; do
    t0=$(date +%s.%N)
    "$build/ps-launch" "$job" --set cluster.workers=$workers --set fit.verbose=0 >/dev/null
    t1=$(date +%s.%N)
    awk -v n="$samples" -v a="$t0" -v b="$t1" 'BEGIN {print n / (b - a)}' >>"$tmp/w$workers"
  done
done
w1=$(median <"$tmp/w1")
w2=$(median <"$tmp/w2")
printf 'bench_seed workers=1 samples_per_sec_median=%.0f\n' "$w1"
printf 'bench_seed workers=2 samples_per_sec_median=%.0f\n' "$w2"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  torch=$(/usr/bin/python3 tests/bench/torch_seed.py --repeats "$runs" | tail -1 | sed 's/.*=//')
  printf 'torch_seed samples_per_sec_median=%.0f (training loop only)\n' "$torch"
  awk -v a="$w1" -v b="$w2" -v t="$torch" \
    'BEGIN {printf "bench_seed ratio_to_torch_loop workers=1 %.2fx workers=2 %.2fx\n", a / t, b / t}'
  # whole process, as ps is timed: python start, import torch, the run (one repeat), exit
  for _ in $(seq "$runs"); do
    t0=$(date +%s.%N)
    /usr/bin/python3 tests/bench/torch_seed.py --repeats 1 >/dev/null
    t1=$(date +%s.%N)
    awk -v n="$samples" -v a="$t0" -v b="$t1" 'BEGIN {print n / (b - a)}' >>"$tmp/torch_whole"
  done
  whole=$(median <"$tmp/torch_whole")
  printf 'torch_seed whole_process samples_per_sec_median=%.0f\n' "$whole"
  awk -v a="$w1" -v b="$w2" -v t="$whole" \
    'BEGIN {printf "bench_seed ratio_to_torch_whole_process workers=1 %.2fx workers=2 %.2fx\n", a / t, b / t}'
else
  echo "bench_seed: torch not installed (apt-get install python3-torch) - no PyTorch baseline"
fi
