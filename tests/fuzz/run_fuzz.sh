#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD (make fuzz) for SECONDS each, on a scratch copy of
# its seed corpus (tests/fuzz/corpus/<target>) plus its saved crashes (regressions/<target>), so
# the repository is never written. Prints one line per target (runs, exec/s, coverage); a crash,
# leak, timeout or UB report fails the run and leaves the input in BUILD/fuzz-artifacts/.
#   usage: run_fuzz.sh BUILD [SECONDS] [TARGET...]
set -uo pipefail
build=${1:?usage: run_fuzz.sh BUILD [SECONDS] [TARGET...]}
seconds=${2:-60}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame wire handlers config data_csv data_libsvm data_criteo
                                     data_idx npy weights client_reply)
scratch=$build/fuzz-scratch
artifacts=$build/fuzz-artifacts
rm -rf "$scratch" && mkdir -p "$scratch" "$artifacts"
# Known reports that wait for a fix (each line names its finding); see ubsan.supp.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$here/ubsan.supp
failed=()
printf '%-13s %-6s %10s %8s %7s %7s %6s\n' target result runs exec/s cov ft corpus
for t in "${targets[@]}"; do
  bin=$build/fuzz_$t
  [ -x "$bin" ] || { echo "$bin: not built" >&2; exit 2; }
  mkdir -p "$scratch/$t"
  for d in "$here/corpus/$t" "$here/regressions/$t"; do
    [ -d "$d" ] && cp "$d"/* "$scratch/$t/" 2>/dev/null
  done
  log=$build/fuzz-$t.log
  # -timeout: one input may take at most this long (the slowest harness needs a few ms);
  # -rss_limit_mb: the harnesses keep nothing between inputs, so growth is a leak.
  "$bin" "$scratch/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=4096 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" >"$log" 2>&1
  rc=$?
  result=ok
  [ $rc -eq 0 ] || { result=FAILED; failed+=("$t"); }
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-13s %-6s %10s %8s %7s %7s %6s\n' "$t" "$result" "${runs:--}" "${eps:--}" \
    "${cov:--}" "${ft:--}" "${corp:--}"
  if [ $rc -ne 0 ]; then
    grep -E 'ERROR|runtime error|fuzz check failed|Test unit written|SUMMARY' "$log" | head -8 |
      sed 's/^/    /'
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (logs: $build/fuzz-<target>.log)" >&2
  exit 1
fi
