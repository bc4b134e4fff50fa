#!/usr/bin/env bash
# tests/deploy/run.sh - the Docker Compose deployment, end to end, on a bare Debian 12 as root:
# packages (docker.io, docker-compose, mmdebstrap), a dockerd of our own, the base image from the
# apt archive (deploy/make-base-image.sh), the project image (its build runs the suite), then a
# 2-server + 2-worker cluster (deploy/compose.sh 2 2) training deploy/job.json - the seed job -
# to its last epoch. Checks: every container exits 0, both workers reached the last epoch, the
# export volume holds the weights (manifest.json and the model's .npy files), `down` leaves no
# container, network or volume. The dockerd we started is stopped by its PID, also on failure.
# Then the same cluster training 1000 epochs, with server-1's process killed (kill -9, as the
# OOM killer would) at epoch 100: Docker restarts it (restart: on-failure:3), it restores its
# checkpoint from the "checkpoints" volume, the workers reconnect, and every container exits 0.
# Then a job that fails (1 server + 1 worker, the training data missing, a 5 s deadline):
# `deploy/compose.sh up` must return non-zero naming both (the worker cannot open its data, the
# server passes its deadline; docker-compose up alone returns 0 there).
# Skips (exit 0, saying why) when not root or when dockerd cannot run here.
# Usage: tests/deploy/run.sh        (make deploy-test)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
DOCKER=/usr/bin/docker  # Debian's client, matching its engine (another may come first in PATH)
project=psdeploytest
t0=$(date +%s)
say() { echo "[deploy-test +$(($(date +%s) - t0))s] $*"; }
skip() { say "SKIP: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root (packages, dockerd)"

missing=""
for p in docker.io docker-compose mmdebstrap; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

work=$(mktemp -d /tmp/ps-deploy-test.XXXXXX)
dockerd_pid=""
compose_up=false fail_up=false kill_up=false
compose() { docker-compose -p "$project" -f "$work/docker-compose.yml" "$@"; }
kill_compose() { docker-compose -p "${project}kill" -f "$work/kill/docker-compose.yml" "$@"; }
fail_compose() { docker-compose -p "${project}fail" -f "$work/fail/docker-compose.yml" "$@"; }
cleanup() {
    local rc=$?
    if $compose_up; then compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
    if $kill_up; then kill_compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
    if $fail_up; then fail_compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
        say "dockerd ($dockerd_pid) stopped"
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if "$DOCKER" info >/dev/null 2>&1; then
    say "using the dockerd that is already running (left running)"
else
    # No systemd: our own engine. These flags leave the host's firewall, ip_forward and links as
    # they were; compose networks still resolve service names.
    dockerd --iptables=false --ip-forward=false --bridge=none >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 30); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    if ! "$DOCKER" info >/dev/null 2>&1; then
        tail -5 "$work/dockerd.log" >&2
        skip "dockerd does not start on this machine (log above)"
    fi
    say "dockerd started (pid $dockerd_pid)"
fi

DOCKER=$DOCKER deploy/make-base-image.sh local/debian:12
say "base image ready"
"$DOCKER" build -q --network host --build-arg BASE=local/debian:12 -f deploy/Dockerfile \
    -t ps:latest . >/dev/null
say "project image built (its build ran the suite)"

cp deploy/job.json "$work/job.json"
mkdir "$work/data"
deploy/compose.sh 2 2 > "$work/docker-compose.yml"
sed -i "s|context: \.\.|context: $root|" "$work/docker-compose.yml"
compose_up=true
say "deploy/compose.sh up: 2 servers, 2 workers"
timeout 600 env DOCKER="$DOCKER" deploy/compose.sh up -p "$project" -f "$work/docker-compose.yml" \
    --no-build --no-color >"$work/up.log" 2>&1 || { cat "$work/up.log"; say "FAIL: compose.sh up"; exit 1; }
say "deploy/compose.sh up returned 0"

grep "^compose.sh:" "$work/up.log" || true
fail=0
n=0
for id in $(compose ps -q); do
    read -r name code < <("$DOCKER" inspect -f '{{.Name}} {{.State.ExitCode}}' "$id")
    n=$((n + 1))
    echo "  ${name#/} exited $code"
    [ "$code" = 0 ] || fail=1
done
[ "$n" = 4 ] || { say "FAIL: $n containers, expected 4"; fail=1; }
for r in 0 1; do
    grep -Eq "worker-$r[_ ].*Epoch 50/50" "$work/up.log" ||
        { say "FAIL: worker-$r did not reach epoch 50/50"; fail=1; }
done
grep -Eq "server-0[_ ].*Epoch 50/50" "$work/up.log" ||
    { say "FAIL: server-0 did not print the job's line for epoch 50/50"; fail=1; }
grep -E "Epoch 50/50|Exported|job is over" -A1 "$work/up.log" | head -12 || true

vol=$("$DOCKER" volume inspect -f '{{.Mountpoint}}' "${project}_export")
exported="$vol/keras-seed"
[ -f "$exported/manifest.json" ] || { say "FAIL: no $exported/manifest.json"; fail=1; }
npy=$(find "$exported" -name '*.npy' | wc -l)
[ "$npy" = 8 ] || { say "FAIL: $npy .npy files in the export, expected 8 (2 layers x kernel, bias x values, accumulators)"; fail=1; }
say "export: manifest.json and $npy .npy files"

if [ "$fail" != 0 ]; then cat "$work/up.log"; exit 1; fi

compose down -v --remove-orphans >/dev/null 2>&1
compose_up=false
left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$project")
nets=$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$project")
vols=$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left$nets$vols" ] || { say "FAIL: down left containers [$left] networks [$nets] volumes [$vols]"; exit 1; }
say "PASS: down left no container, network or volume"

# A server killed mid-job: Docker restarts it, it restores, the job completes.
mkdir "$work/kill" "$work/kill/data"
sed -e 's|"epochs": 50|"epochs": 1000|' deploy/job.json >"$work/kill/job.json"
grep -q '"epochs": 1000' "$work/kill/job.json" ||
    { say "FAIL: deploy/job.json changed: cannot make the 1000-epoch job"; exit 1; }
deploy/compose.sh 2 2 > "$work/kill/docker-compose.yml"
sed -i "s|context: \.\.|context: $root|" "$work/kill/docker-compose.yml"
kill_up=true
say "deploy/compose.sh up: 2 servers, 2 workers, 1000 epochs; server-1 killed at epoch 100"
env DOCKER="$DOCKER" deploy/compose.sh up -p "${project}kill" -f "$work/kill/docker-compose.yml" \
    --no-build --no-color >"$work/kill/up.log" 2>&1 &
up_pid=$!
killed=""
for _ in $(seq 1 1200); do  # 0.1 s each: 2 min at most
    # grep reads it all (-q would stop at the match, and logs' SIGPIPE fail the pipe)
    if "$DOCKER" logs "${project}kill_worker-0_1" 2>&1 | grep "Epoch 100/1000" >/dev/null; then
        pid=$("$DOCKER" inspect -f '{{.State.Pid}}' "${project}kill_server-1_1")
        [ "${pid:-0}" != 0 ] && kill -9 "$pid" && killed=$pid
        break
    fi
    kill -0 "$up_pid" 2>/dev/null || break
    sleep 0.1
done
rc=0
if [ -n "$killed" ]; then
    say "killed server-1's process ($killed) with SIGKILL"
    timeout 600 tail --pid="$up_pid" -f /dev/null || true
fi
kill -0 "$up_pid" 2>/dev/null && kill "$up_pid"  # no kill, or no end: the trap's down stops it
wait "$up_pid" || rc=$?
grep "^compose.sh:" "$work/kill/up.log" || true
restarts=$("$DOCKER" inspect -f '{{.RestartCount}}' "${project}kill_server-1_1" 2>/dev/null || echo "?")
fail=0
[ -n "$killed" ] || { say "FAIL: worker-0 never printed Epoch 100/1000, or server-1 had no process"; fail=1; }
[ "$rc" = 0 ] || { say "FAIL: compose.sh up returned $rc"; fail=1; }
[ "$restarts" = 1 ] || { say "FAIL: server-1 restarted $restarts times, expected 1"; fail=1; }
# from the container's own log: compose's attached output may miss the first lines of a
# restarted container (it re-attaches after the start)
"$DOCKER" logs "${project}kill_server-1_1" 2>&1 | grep -E "restored [0-9]+ rows" >"$work/kill/restored" ||
    { say "FAIL: server-1 did not say it restored its checkpoint"; fail=1; }
grep -Eq "worker-[01][_ ].*reconnecting to retry step" "$work/kill/up.log" ||
    { say "FAIL: no worker said it reconnects"; fail=1; }
for r in 0 1; do
    grep -Eq "worker-$r[_ ].*Epoch 1000/1000" "$work/kill/up.log" ||
        { say "FAIL: worker-$r did not reach epoch 1000/1000"; fail=1; }
done
if [ "$fail" != 0 ]; then tail -60 "$work/kill/up.log"; exit 1; fi
cat "$work/kill/restored"
grep -E "reconnecting to retry" "$work/kill/up.log" | head -2 || true
kill_compose down -v --remove-orphans >/dev/null 2>&1
kill_up=false
say "PASS: server-1 killed at epoch 100, restarted by Docker once, restored; the job completed"

# A failing job: compose.sh up returns non-zero and names what failed.
mkdir "$work/fail" "$work/fail/data"
sed -e 's|"data": {"train": {"format": "random", "rows": 1000, "cols": 20}}|"data": {"train": {"format": "libsvm", "path": "/data/missing.svm"}}|' \
    -e 's|"job_deadline_s": 900|"job_deadline_s": 5|' deploy/job.json >"$work/fail/job.json"
grep -q missing.svm "$work/fail/job.json" && grep -q '"job_deadline_s": 5' "$work/fail/job.json" ||
    { say "FAIL: deploy/job.json changed: cannot make the failing job"; exit 1; }
deploy/compose.sh 1 1 > "$work/fail/docker-compose.yml"
sed -i "s|context: \.\.|context: $root|" "$work/fail/docker-compose.yml"
fail_up=true
say "deploy/compose.sh up: a job whose data is missing (1 server, 1 worker)"
rc=0
timeout 120 env DOCKER="$DOCKER" deploy/compose.sh up -p "${project}fail" \
    -f "$work/fail/docker-compose.yml" --no-build --no-color >"$work/fail/up.log" 2>&1 || rc=$?
grep "^compose.sh:" "$work/fail/up.log" || true
if [ "$rc" = 0 ] || ! grep -q "^compose.sh: failed: .*server-0 (exited, exit code 1)" "$work/fail/up.log" ||
   ! grep -q "^compose.sh: failed: .*worker-0 (exited, exit code [12])" "$work/fail/up.log"; then
    cat "$work/fail/up.log"; say "FAIL: compose.sh up returned $rc for the failing job"; exit 1
fi
fail_compose down -v --remove-orphans >/dev/null 2>&1
fail_up=false
say "PASS: compose.sh up returned $rc for the failing job, naming server-0 and worker-0"
