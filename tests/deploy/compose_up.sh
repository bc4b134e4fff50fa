#!/bin/sh
# compose_up.sh - deploy/compose.sh up's verdict, without Docker: docker-compose and docker are
# stand-ins on PATH that replay a cluster's containers (service, state, exit code) and log how
# they were called. ctest runs it (test_compose_up); the real engine is tests/deploy/run.sh's.
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
fake="$(mktemp -d /tmp/ps_compose_up.XXXXXX)"
trap 'rm -rf "$fake"' EXIT
cat >"$fake/docker-compose" <<'SH'
#!/bin/sh
echo "$*" >>"$FAKE_LOG"
case " $* " in *" up "*) exit "$FAKE_UP_RC" ;; *" ps -q "*) for id in $FAKE_IDS; do echo "$id"; done ;; esac
SH
# FAKE_<id>: the container's states, one per inspect call, separated by |; the last repeats
cat >"$fake/docker" <<'SH'
#!/bin/sh
for id; do :; done  # the last argument: the container
n=$(($(cat "$FAKE_DIR/n_$id" 2>/dev/null || echo 0) + 1))
echo "$n" >"$FAKE_DIR/n_$id"
eval "rest=\"\$FAKE_$id\""
while [ "$n" -gt 1 ] && [ "${rest#*|}" != "$rest" ]; do rest=${rest#*|}; n=$((n - 1)); done
echo "${rest%%|*}"
SH
chmod +x "$fake/docker-compose" "$fake/docker"
failed=0

# case NAME WANT_RC WANT_STDERR UP_RC "IDS" [a=... b=... c=...]: compose.sh up -p p -f f.yml --no-color
case_() {
    name=$1 want_rc=$2 want_err=$3
    export FAKE_UP_RC=$4 FAKE_IDS=$5 FAKE_LOG="$fake/log" FAKE_DIR="$fake"
    rm -f "$fake"/n_*
    shift 5
    for kv; do export "FAKE_${kv%%=*}=${kv#*=}"; done
    : >"$FAKE_LOG"
    rc=0
    PATH="$fake:$PATH" sh "$root/deploy/compose.sh" up -p p -f f.yml --no-color \
        >"$fake/out" 2>"$fake/err" || rc=$?
    if [ "$rc" != "$want_rc" ]; then
        echo "FAIL $name: exit $rc, want $want_rc; stderr: $(cat "$fake/err")"; failed=1; return
    fi
    if [ -n "$want_err" ] && ! grep -qF "$want_err" "$fake/err"; then
        echo "FAIL $name: stderr lacks \"$want_err\": $(cat "$fake/err")"; failed=1; return
    fi
    if [ -z "$want_err" ] && [ -s "$fake/err" ]; then
        echo "FAIL $name: stderr not empty: $(cat "$fake/err")"; failed=1; return
    fi
    if ! grep -qx -- "-p p -f f.yml up --no-color" "$FAKE_LOG"; then
        echo "FAIL $name: docker-compose was called as: $(cat "$FAKE_LOG")"; failed=1; return
    fi
    echo "ok   $name"
}

case_ "every container exited 0" 0 "" 0 "a b" a="server-0 exited 0" b="worker-0 exited 0"
grep -qx "compose.sh: worker-0 exited, exit code 0" "$fake/out" || { echo "FAIL: no line for worker-0: $(cat "$fake/out")"; failed=1; }
case_ "a worker failed, one still runs" 1 \
    "compose.sh: failed: worker-0 (exited, exit code 2), worker-1 (running, exit code 0)" \
    0 "a b c" a="server-0 exited 0" b="worker-0 exited 2" c="worker-1 running 0"
case_ "a server failed at the deadline" 1 "compose.sh: failed: server-1 (exited, exit code 1)" \
    0 "a b" a="server-1 exited 1" b="worker-0 exited 0"
case_ "a server Docker restarted is waited for" 0 "" 0 "a b" \
    a="server-0 restarting 137 1|server-0 running 0 1|server-0 exited 0 1" b="worker-0 exited 0 0"
grep -qx "compose.sh: waiting for server-0 (restarting, restarted 1 times)" "$fake/out" &&
    grep -qx "compose.sh: waiting for server-0 (running, restarted 1 times)" "$fake/out" &&
    grep -qx "compose.sh: server-0 exited, exit code 0, restarted 1 times" "$fake/out" ||
    { echo "FAIL: the restarted server's lines: $(cat "$fake/out")"; failed=1; }
case_ "a server restarted and failed again" 1 "compose.sh: failed: server-0 (exited, exit code 1)" \
    0 "a" a="server-0 restarting 1 3|server-0 exited 1 3"
case_ "up itself failed" 3 "compose.sh: docker-compose up failed (status 3)" 3 "a" \
    a="server-0 exited 0"
case_ "no container" 1 "compose.sh: no container to check" 0 ""
rc=0
sh "$root/deploy/compose.sh" up -p >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] && echo "ok   -p without a value is a usage error" || { echo "FAIL: up -p: exit $rc, want 2"; failed=1; }
exit "$failed"
