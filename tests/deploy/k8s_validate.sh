#!/usr/bin/env bash
# k8s_validate.sh - deploy/k8s checked offline (no cluster): k8s_validate.mjs validates every
# object against the Kubernetes OpenAPI schemas (npm kubernetes-models) and checks that the
# servers' replicas, the workers' completions/parallelism, the ports and the job file agree; then
# the same on broken copies, each of which must be refused with its reason. With kubectl, also
# the output of the real kustomize (kubectl kustomize). Skips (exit 0, saying so) without node
# and npm; .ci/run installs them.
#   tests/deploy/k8s_validate.sh [WORKDIR]     (WORKDIR: where node_modules go; default build/)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${1:-$root/build}/k8s-validate"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "k8s_validate: SKIPPED: node and npm are needed (apt-get install nodejs npm)"
  exit 0
fi
mkdir -p "$work"
cp "$here/package.json" "$here/k8s_validate.mjs" "$work/"
(cd "$work" && timeout 300 npm install --no-audit --no-fund --loglevel=error >/dev/null)
validate() { node "$work/k8s_validate.mjs" "$@"; }

validate "$root/deploy/k8s"
if command -v kubectl >/dev/null && kubectl kustomize "$root/deploy/k8s" >"$work/rendered.yaml" 2>/dev/null; then
  validate "$root/deploy/k8s" "$work/rendered.yaml"
else
  echo "k8s_validate: no kubectl: checked the kustomization as read here, not kustomize's output"
fi

# Broken copies: each must fail, naming what is wrong.
passed=0 failed=0
expect_refused() { # NAME FILE SED-EXPR EXPECTED-MESSAGE
  local name="$1" file="$2" expr="$3" want="$4" tmp
  tmp="$(mktemp -d)"
  cp "$root"/deploy/k8s/* "$tmp/"
  sed -i -e "$expr" "$tmp/$file"
  if out="$(validate "$tmp" 2>&1)"; then
    echo "FAIL $name: accepted"; failed=$((failed + 1))
  elif ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL $name: refused without \"$want\": $out"; failed=$((failed + 1))
  else
    echo "ok   $name"; passed=$((passed + 1))
  fi
  rm -rf "$tmp"
}
expect_refused "replicas != servers" server.yaml 's/replicas: 2/replicas: 3/' \
  "replicas 3, but job.json cluster.servers has 2"
expect_refused "completions != workers" worker-job.yaml 's/completions: 3/completions: 2/' \
  "completions 2, but job.json cluster.workers is 3"
expect_refused "parallelism != workers" worker-job.yaml 's/parallelism: 3/parallelism: 1/' \
  "parallelism 1, but job.json cluster.workers is 3"
expect_refused "server name not its ordinal" job.json 's/ps-server-1.ps-server/ps-server-7.ps-server/' \
  'cluster.servers[1] = "ps-server-7.ps-server:7070"'
expect_refused "port disagrees" job.json 's/ps-server-1.ps-server:7070/ps-server-1.ps-server:7071/' \
  "cluster.servers[1] port 7071"
expect_refused "not indexed" worker-job.yaml 's/completionMode: Indexed/completionMode: NonIndexed/' \
  "completionMode must be Indexed"
expect_refused "schema: replicas a string" server.yaml 's/replicas: 2/replicas: "2"/' "schema:"
expect_refused "schema: backoffLimit a list" worker-job.yaml 's/backoffLimit: 2/backoffLimit: [2]/' "schema:"
expect_refused "no readiness probe" server.yaml 's/readinessProbe:/startupProbe:/' "no readinessProbe"
expect_refused "no requests" worker-job.yaml '/^ *cpu: "1"$/d' "has no cpu and memory requests"
expect_refused "missing PVC" server.yaml 's/claimName: ps-exports/claimName: nope/' \
  "no PersistentVolumeClaim nope"
expect_refused "servers exit with the job" server.yaml 's/ --serve-after-job//' \
  "the server needs --serve-after-job"
expect_refused "a mount of no volume" server.yaml 's/- name: checkpoints$/- name: checkpoints-gone/' \
  "mounts checkpoints-gone, which is no volume"
expect_refused "checkpoints on no volume" job.json 's|/var/lib/ps/checkpoints|/srv/checkpoints|' \
  "server.checkpoint_dir /srv/checkpoints is on no volume of the server"
expect_refused "worker position lost on restart" worker-job.yaml 's/restartPolicy: OnFailure/restartPolicy: Never/' \
  "loses fit.state_dir"
echo "k8s_validate: $passed passed, $failed failed"
[ "$failed" = 0 ]
