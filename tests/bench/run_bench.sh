#!/usr/bin/env bash
# run_bench.sh - builds the benchmarks (Release) and runs them; the output also goes to
# BUILD_DIR/bench.txt. Benchmarks are programs, not tests: ctest never runs them.
#
#   tests/bench/run_bench.sh [BUILD_DIR] [bench_ps options...]     (BUILD_DIR defaults to build)
#
# Runs bench_ps (see its --help), then tests/bench/bench_seed.sh (the seed job, and PyTorch on the
# same model when /usr/bin/python3 has torch), then tests/bench/bench_modes.sh (async, sync, ssp),
# then tests/bench/bench_jobs.sh (Fashion-MNIST and the CTR job against PyTorch), then
# bench_step_bound (Fashion-MNIST's sync step with no transport: 1 thread against 2), then
# bench_load (256 clients against one server for 20 s: errors, latency, the server's RSS),
# then bench_memory (bytes per row; admission and expiry on a power-law stream), then
# bench_checkpoint (10 M rows written and restored against dd; pushes during a checkpoint, in
# process and over loopback to a ps-server; it
# needs ~4.5 GB free in /tmp and removes its files).
# The machine-parseable lines start with "bench_ps ", "bench_seed ", "torch_seed ",
# "bench_jobs ", "bench_step_bound ", "bench_modes ", "bench_load ", "bench_memory " and
# "bench_checkpoint ".
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=build
if [[ $# -gt 0 && $1 != -* ]]; then
    build=$1
    shift
fi
[[ $build = /* ]] || build=$root/$build

# Configure for Release if the tree is new or was configured for another build type; then
# build what the benchmark needs (a no-op when it is up to date).
type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if [[ $type != Release ]]; then
    echo "run_bench: configuring $build for Release${type:+ (was $type)}"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_ps bench_load bench_memory bench_checkpoint bench_step_bound ps-server ps-worker ps-launch ps-export ps-datagen \
    -j "${JOBS:-2}"

out=$build/bench.txt
{
    echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "$(uname -srm), $(nproc) CPUs"
    rc=0
    "$build/bench_ps" --server "$build/ps-server" "$@" || rc=$?
    echo
    bash "$root/tests/bench/bench_seed.sh" "$build" || rc=$?
    echo
    bash "$root/tests/bench/bench_jobs.sh" "$build" || rc=$?
    echo
    "$build/bench_step_bound" || rc=$?
    echo
    bash "$root/tests/bench/bench_modes.sh" "$build" || rc=$?
    echo
    "$build/bench_load" --server "$build/ps-server" || rc=$?
    echo
    "$build/bench_memory" || rc=$?
    echo
    "$build/bench_checkpoint" || rc=$?
    exit $rc
} 2>&1 | tee "$out" || { echo "run_bench: a benchmark failed; output in $out"; exit 1; }
echo "run_bench: saved to $out"
