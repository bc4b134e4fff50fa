#!/usr/bin/env bash
# bench_loop.sh - the worker's step loop on this machine: fit.threads 1 (batches prepared inline)
# against 2 (a prep thread), and cluster.busy_poll_us 0 (sleep on the socket) against 500 (poll
# first), on the Fashion-MNIST MLP (784-256-10, batch 128, idx files) and the CTR job
# (ps-datagen defaults, embedding 16 + 16-64-1, batch 256), 1 server + 2 workers, 2 epochs.
# Runs are interleaved (every setting once, then again), RUNS times; prints each run and the
# median samples/s per job and setting ("bench_loop " lines), and the median run's --verbose
# time breakdown of the last epoch.
#
#   tests/bench/bench_loop.sh [BUILD_DIR] [RUNS]      (build, 3)
# FMNIST_DIR (default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist) holds
# the idx files; the CTR data is generated into a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$root/$build
runs=${2:-3}
fm=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$build/ps-datagen" "$tmp/ctr" >/dev/null
cat >"$tmp/fmnist.json" <<JSON
{
  "job_id": "bench-fmnist", "seed": 1,
  "cluster": {"servers": 1, "workers": 2},
  "model": {"input_dim": 784,
            "layers": [{"units": 256, "activation": "relu"}, {"units": 10, "activation": "softmax"}],
            "loss": "sparse_categorical_crossentropy"},
  "optimizer": {"learning_rate": 0.05},
  "fit": {"epochs": 2, "batch_size": 128, "verbose": 2},
  "data": {"train": {"format": "idx", "path": "$fm/train-images-idx3-ubyte.gz",
                     "labels": "$fm/train-labels-idx1-ubyte.gz"}}
}
JSON
cat >"$tmp/ctr.json" <<JSON
{
  "job_id": "bench-ctr", "seed": 1,
  "cluster": {"servers": 1, "workers": 2},
  "model": {"input": {"type": "sparse", "num_ids": 1000001},
            "layers": [{"units": 16, "activation": "relu"}, {"units": 64, "activation": "relu"},
                       {"units": 1, "activation": "sigmoid"}],
            "loss": "binary_crossentropy"},
  "optimizer": {"learning_rate": 0.01},
  "fit": {"epochs": 2, "batch_size": 256, "verbose": 2},
  "data": {"train": {"format": "libsvm", "path": "$tmp/ctr.train.svm"}}
}
JSON

settings=("threads=1 poll=0" "threads=2 poll=0" "threads=1 poll=500" "threads=2 poll=500")
for run in $(seq 1 "$runs"); do
  for job in fmnist ctr; do
    for s in "${settings[@]}"; do
      read -r th po <<<"$s"
      out=$(timeout 300 "$build/ps-launch" "$tmp/$job.json" --verbose --set "fit.${th}" \
              --set "cluster.busy_poll_us=${po#poll=}" 2>/dev/null)
      sps=$(sed -n 's/.*(\([0-9]*\) samples\/s).*/\1/p' <<<"$out")
      echo "$job $s run $run: $sps samples/s"
      echo "$job|$s|$sps|$(grep '^time/step' <<<"$out" | tail -1)" >>"$tmp/results"
    done
  done
done
for job in fmnist ctr; do
  for s in "${settings[@]}"; do
    grep "^$job|$s|" "$tmp/results" | sort -t'|' -k3,3n | awk -F'|' -v n="$runs" \
      'NR == int((n + 1) / 2) { printf "bench_loop %s %s: median %s samples/s\n  %s\n", $1, $2, $3, $4 }'
  done
done
