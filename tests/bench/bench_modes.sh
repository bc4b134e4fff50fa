#!/usr/bin/env bash
# Consistency modes: async, sync and ssp (staleness 2) on the seed job and on a sparse CTR-style
# job, with 1, 2 and 4 workers (1 server): samples/s of the whole process (ps-launch start to
# exit), medians of RUNS runs interleaved so every mode sees the same machine, the final loss
# (sparse: held-out), and sync's time per epoch against async's. Writes loss against training
# time (workers = 2) as an SVG: BUILD_DIR/bench_modes.svg.
#   tests/bench/bench_modes.sh [BUILD_DIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-release}
runs=${2:-3}
[[ $build = /* ]] || build=$PWD/$build

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The sparse job's data: 200 000 training and 50 000 held-out rows of 20 ids out of 10 000
# (libsvm, 1-based), labels from a hidden logistic model (awk's seeded generator).
awk -v rows=250000 -v ids=10000 -v per=20 -v seed=1 -v train="$tmp/train.svm" \
    -v val="$tmp/val.svm" 'BEGIN {
  srand(seed);
  for (i = 1; i <= ids; i++) w[i] = 2.5 * (rand() - 0.5);
  for (r = 0; r < rows; r++) {
    z = -0.5; line = "";
    for (k = 0; k < per; k++) { id = 1 + int(rand() * ids); z += w[id]; line = line " " id ":1" }
    y = rand() < 1 / (1 + exp(-z)) ? 1 : 0;
    print y line > (r < 200000 ? train : val);
  }
}'
cat >"$tmp/sparse.json" <<EOF
{
  "job_id": "bench-sparse", "seed": 1,
  "cluster": {"servers": 1, "workers": 1},
  "model": {"input": {"type": "sparse", "num_ids": 10000},
            "layers": [{"units": 16, "activation": "relu"}, {"units": 64, "activation": "relu"},
                       {"units": 1, "activation": "sigmoid"}],
            "loss": "binary_crossentropy"},
  "optimizer": {"learning_rate": 0.01},
  "fit": {"epochs": 2, "batch_size": 256},
  "data": {"train": {"format": "libsvm", "path": "$tmp/train.svm"},
           "validation": {"format": "libsvm", "path": "$tmp/val.svm"}}
}
EOF

declare -A samples=([seed]=50000 [sparse]=400000)
declare -A job=([seed]=examples/keras_seed.json [sparse]=$tmp/sparse.json)
modes=(async sync ssp)
for run in $(seq "$runs"); do
  for j in seed sparse; do
    for w in 1 2 4; do
      for m in "${modes[@]}"; do
        sets=(--set cluster.consistency=$m --set cluster.workers=$w --set fit.verbose=0
              --set "fit.metrics_file=$tmp/$j.$m.$w.$run.jsonl")
        [[ $m = ssp ]] && sets+=(--set cluster.staleness=2)
        t0=$(date +%s.%N)
        "$build/ps-launch" "${job[$j]}" "${sets[@]}" >/dev/null
        t1=$(date +%s.%N)
        awk -v n="${samples[$j]}" -v a="$t0" -v b="$t1" 'BEGIN {print n / (b - a)}' \
          >>"$tmp/$j.$m.$w.sps"
        # training seconds per epoch (the slowest worker's), summed over the epochs
        awk -F'"seconds": ' '{split($2, s, "}"); t += s[1]} END {print t / NR}' \
          "$tmp/$j.$m.$w.$run.jsonl" >>"$tmp/$j.$m.$w.epoch"
      done
    done
  done
done

for j in seed sparse; do
  for w in 1 2 4; do
    for m in "${modes[@]}"; do
      last=$(tail -1 "$tmp/$j.$m.$w.1.jsonl")
      key=loss
      [[ $j = sparse ]] && key=val_loss
      loss=$(sed -n "s/.*\"$key\": \([0-9.e+-]*\).*/\1/p" <<<"$last")
      printf 'bench_modes job=%s mode=%s workers=%d samples_per_sec_median=%.0f epoch_seconds_median=%.4f final_%s=%s\n' \
        "$j" "$m" "$w" "$(median <"$tmp/$j.$m.$w.sps")" "$(median <"$tmp/$j.$m.$w.epoch")" "$key" "$loss"
    done
  done
  awk -v a="$(median <"$tmp/$j.async.2.epoch")" -v s="$(median <"$tmp/$j.sync.2.epoch")" -v j="$j" \
    'BEGIN {printf "bench_modes job=%s workers=2 sync_epoch_time_over_async=%.2fx\n", j, s / a}'
done

# Loss against cumulative training time, workers = 2, first run: one panel per job.
awk -v tmp="$tmp" '
function panel(j, x0, title,    m, f, line, n, t, l, i, tmax, lmin, lmax, px, py, pts, c) {
  tmax = 0; lmin = 1e9; lmax = -1e9;
  for (m = 1; m <= 3; m++) {
    f = tmp "/" j "." mode[m] ".2.1.jsonl"; t = 0; n[m] = 0;
    while ((getline line < f) > 0) {
      split(line, a, "\"seconds\": "); split(a[2], b, "}"); t += b[1];
      split(line, c, (j == "sparse" ? "\"val_loss\": " : "\"loss\": ")); split(c[2], d, ",");
      n[m]++; T[m, n[m]] = t; L[m, n[m]] = d[1] + 0;
      if (t > tmax) tmax = t; if (d[1] + 0 < lmin) lmin = d[1] + 0; if (d[1] + 0 > lmax) lmax = d[1] + 0;
    }
    close(f);
  }
  if (lmax == lmin) lmax = lmin + 1e-3;
  printf "<g transform=\"translate(%d,0)\"><rect x=\"60\" y=\"30\" width=\"300\" height=\"200\" fill=\"none\" stroke=\"#999\"/>\n", x0;
  printf "<text x=\"210\" y=\"20\" text-anchor=\"middle\">%s</text>\n", title;
  printf "<text x=\"210\" y=\"262\" text-anchor=\"middle\">training seconds (0 to %.3g)</text>\n", tmax;
  printf "<text x=\"55\" y=\"35\" text-anchor=\"end\">%.4f</text><text x=\"55\" y=\"230\" text-anchor=\"end\">%.4f</text>\n", lmax, lmin;
  for (m = 1; m <= 3; m++) {
    pts = "";
    for (i = 1; i <= n[m]; i++) {
      px = 60 + 300 * T[m, i] / tmax; py = 230 - 200 * (L[m, i] - lmin) / (lmax - lmin);
      pts = pts sprintf("%.1f,%.1f ", px, py);
    }
    printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", color[m], pts;
    printf "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", 280, 45 + 15 * m, color[m], label[m];
  }
  print "</g>";
}
BEGIN {
  mode[1] = "async"; mode[2] = "sync"; mode[3] = "ssp";
  label[1] = "async"; label[2] = "sync"; label[3] = "ssp s=2";
  color[1] = "#1f77b4"; color[2] = "#d62728"; color[3] = "#2ca02c";
  print "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"280\" font-family=\"sans-serif\" font-size=\"12\">";
  print "<rect width=\"800\" height=\"280\" fill=\"white\"/>";
  panel("seed", 0, "seed job, 2 workers: loss per epoch");
  panel("sparse", 400, "sparse job, 2 workers: held-out loss per epoch");
  print "</svg>";
}' >"$build/bench_modes.svg"
echo "bench_modes: plot in $build/bench_modes.svg"
