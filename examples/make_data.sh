#!/usr/bin/env bash
# make_data.sh - the example data sets, into data/ under the repository root (where ps-launch is
# run from, so the job files' relative paths find them). Deterministic: ps-datagen's default seed.
#   examples/make_data.sh [BUILD_DIR]        (default build; `make build` first)
#
#   data/ctr.{train,test}.svm       examples/ctr.json, examples/ctr_logreg.json: 200 000 rows
#                                   (20 % held out) of ~25 ids out of 1 000 000, libsvm
#   data/criteo.{train,test}.tsv    examples/criteo.json: 200 000 rows in Criteo's TSV form
#   data/fashion-mnist -> /usr/share/datasets/fashion-mnist
#                                   examples/fashion_mnist.json (Debian: dataset-fashion-mnist)
# ps-datagen prints the best held-out logloss and AUC any model can expect on each set.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mkdir -p data
"$build/ps-datagen" data/ctr
"$build/ps-datagen" data/criteo --format criteo
fmnist=/usr/share/datasets/fashion-mnist
if [[ -e $fmnist/train-images-idx3-ubyte.gz ]]; then
  ln -sfn "$fmnist" data/fashion-mnist
else
  echo "make_data.sh: $fmnist is missing: apt-get install dataset-fashion-mnist" >&2
fi
