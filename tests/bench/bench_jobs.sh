#!/usr/bin/env bash
# The real-model jobs against PyTorch 1.13 in the same run: samples/s of the whole process
# (start to exit: reading the data, every epoch's training and validation), medians of RUNS runs
# interleaved with PyTorch's so both see the same machine, and what each reached.
#   fmnist: examples/fashion_mnist.json (1 server + 2 workers) against tests/ref/fmnist_torch.py
#           --g0 0.001 (batch 128: the same steps and G0), EPOCHS epochs (default 10) of 60 000 images
#   ctr:    examples/ctr.json (1 server + 2 workers) on ps-datagen's defaults against
#           tests/ref/ctr_torch.py --lr 0.03 --epochs 1 (its best), 160 000 training rows
#   tests/bench/bench_jobs.sh [BUILD_DIR] [RUNS] [EPOCHS]
# Prints "bench_jobs job=... ps_samples_per_sec=... torch_samples_per_sec=... ratio=..." lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-release}
runs=${2:-3}
epochs=${3:-10}
fmnist=/usr/share/datasets/fashion-mnist

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {print n / (b - a)}'; }

/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "bench_jobs: torch not installed (apt-get install python3-torch): no baseline"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/ps-datagen" "$tmp/ctr" >/dev/null

for _ in $(seq "$runs"); do
  if [[ -e $fmnist/train-images-idx3-ubyte.gz ]]; then
    t0=$(now)
    "$build/ps-launch" examples/fashion_mnist.json --set fit.verbose=2 --set fit.epochs="$epochs" \
      --set data.train.path=$fmnist/train-images-idx3-ubyte.gz \
      --set data.train.labels=$fmnist/train-labels-idx1-ubyte.gz \
      --set data.validation.path=$fmnist/t10k-images-idx3-ubyte.gz \
      --set data.validation.labels=$fmnist/t10k-labels-idx1-ubyte.gz >"$tmp/ps.out"
    t1=$(now)
    rate $((epochs * 60000)) "$t0" "$t1" >>"$tmp/fmnist.ps"
    grep -o 'val_accuracy: [0-9.]*' "$tmp/ps.out" | tail -1 | sed 's/.* //' >>"$tmp/fmnist.ps_acc"
    t0=$(now)
    /usr/bin/python3 tests/ref/fmnist_torch.py --dir "$fmnist" --epochs "$epochs" --g0 0.001 >"$tmp/t.out"
    t1=$(now)
    rate $((epochs * 60000)) "$t0" "$t1" >>"$tmp/fmnist.torch"
    sed -n 's/.*final_test_accuracy=//p' "$tmp/t.out" >>"$tmp/fmnist.torch_acc"
  fi
  t0=$(now)
  "$build/ps-launch" examples/ctr.json --set fit.verbose=2 \
    --set data.train.path="$tmp/ctr.train.svm" --set data.validation.path="$tmp/ctr.test.svm" \
    >"$tmp/ps.out"
  t1=$(now)
  rate 160000 "$t0" "$t1" >>"$tmp/ctr.ps"
  grep -o 'val_loss: [0-9.]*' "$tmp/ps.out" | tail -1 | sed 's/.* //' >>"$tmp/ctr.ps_acc"
  t0=$(now)
  /usr/bin/python3 tests/ref/ctr_torch.py "$tmp/ctr" --lr 0.03 --epochs 1 >"$tmp/t.out"
  t1=$(now)
  rate 160000 "$t0" "$t1" >>"$tmp/ctr.torch"
  sed -n 's/.*val_logloss=\([0-9.]*\).*/\1/p' "$tmp/t.out" >>"$tmp/ctr.torch_acc"
done

for job in fmnist ctr; do
  [[ -s $tmp/$job.ps ]] || { echo "bench_jobs job=$job: skipped ($fmnist missing)"; continue; }
  what=$([[ $job = fmnist ]] && echo val_accuracy || echo val_logloss)
  ps=$(median <"$tmp/$job.ps")
  torch=$(median <"$tmp/$job.torch")
  printf 'bench_jobs job=%s runs=%s ps_samples_per_sec=%.0f torch_samples_per_sec=%.0f ratio=%.2fx ps_%s=%s torch_%s=%s\n' \
    "$job" "$runs" "$ps" "$torch" "$(awk -v a="$ps" -v b="$torch" 'BEGIN {print a / b}')" \
    "$what" "$(median <"$tmp/$job.ps_acc")" "$what" "$(median <"$tmp/$job.torch_acc")"
done
