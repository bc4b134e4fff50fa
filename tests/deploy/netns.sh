#!/usr/bin/env bash
# netns.sh - the seed job across hosts on a real (virtual) network: one network namespace per
# host (2 servers, 3 workers), each with its own address on a veth pair whose other end sits on a
# bridge in a namespace of its own; nothing on the machine's own interfaces or firewall changes.
#   1. the job across the namespaces ends with the same losses as on loopback (sync: bit-exact);
#   2. with delay and loss on every link it still trains to its last epoch, with the same losses
#      (tc netem where the kernel has it; else nftables drops and tbf queueing, said in the output);
#   3. one server's link goes down mid-training (and stays down): every worker reports it within
#      its deadline (cluster.request_timeout_ms), tries to reconnect for cluster.recover_timeout_ms
#      (5 s here) and exits 1 with a message naming that server; nothing hangs.
# Every namespace (and with it every veth and the bridge) is removed on exit, whatever happens.
# Root only; skipped with a clear message otherwise, or where namespaces cannot be made. A phase
# that needs what the machine lacks (netem, or nft + tbf) is skipped with a message; the rest run.
#   tests/deploy/netns.sh [BUILD_DIR]          (default build/)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(cd "${1:-$root/build}" && pwd)"
tag="psn$$"                  # namespace and link names: unique to this run, short (IFNAMSIZ)
work="$(mktemp -d /tmp/ps_netns.XXXXXX)"
pids=() namespaces=()
passed=0 failed=0 skipped=0

skip_all() { echo "netns: SKIPPED: $*"; rm -rf "$work"; exit 0; }
[ "$(id -u)" = 0 ] || skip_all "needs root (network namespaces)"
command -v ip >/dev/null || skip_all "needs ip (Debian package iproute2)"
for b in ps-server ps-worker; do [ -x "$bin/$b" ] || { echo "netns: no $bin/$b (build first)"; exit 1; }; done

cleanup() {
  local p ns
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if ip netns list | grep -q "^$tag"; then
    echo "netns: FAIL: namespaces left behind: $(ip netns list | grep "^$tag" | tr '\n' ' ')"
    exit 1
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

# --- the network: bridge namespace + one namespace per host -------------------------------------
br="$tag-br"
ip netns add "$br" 2>/dev/null || skip_all "cannot create network namespaces here"
namespaces+=("$br")
ip -n "$br" link set lo up
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
hosts=(s0 s1 w0 w1 w2)
declare -A addr=([s0]=10.77.0.10 [s1]=10.77.0.11 [w0]=10.77.0.20 [w1]=10.77.0.21 [w2]=10.77.0.22)
for h in "${hosts[@]}"; do
  ns="$tag-$h"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$ns" link set lo up
  # the pair is made in the host's namespace (eth0) and its peer moved to the bridge's
  ip -n "$ns" link add eth0 type veth peer name "p-$h"
  ip -n "$ns" link set "p-$h" netns "$br"
  ip -n "$br" link set "p-$h" master br0
  ip -n "$br" link set "p-$h" up
  ip -n "$ns" addr add "${addr[$h]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done
ip netns exec "$tag-w0" "$bin/ps-server" --help >/dev/null # binaries run inside a namespace
echo "netns: bridge $br, hosts ${hosts[*]} on 10.77.0.0/24"

# --- the job ------------------------------------------------------------------------------------
job="$work/job.json"
sed -e 's/"servers": 1, "workers": 2/"servers": ["10.77.0.10:7070", "10.77.0.11:7070"], "workers": 3, "consistency": "sync", "connect_timeout_ms": 20000, "request_timeout_ms": 4000, "barrier_timeout_ms": 2000/' \
  "$root/examples/keras_seed.json" >"$job"
grep -q '"10.77.0.10:7070"' "$job" || { echo "netns: examples/keras_seed.json changed: cannot set its cluster"; exit 1; }

# run_in NS OUT CMD...: background, pid appended to pids
run_in() { local ns="$1" out="$2"; shift 2; ip netns exec "$ns" "$@" >"$out.out" 2>"$out.err" & pids+=("$!"); }

# wait_pid PID SECONDS: its exit code, or 124 after killing it at the deadline
wait_pid() {
  local pid="$1" t=0
  while kill -0 "$pid" 2>/dev/null && [ "$t" -lt "$(( $2 * 10 ))" ]; do sleep 0.1; t=$((t + 1)); done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; wait "$pid" 2>/dev/null || true; return 124; fi
  local rc=0; wait "$pid" || rc=$?; return "$rc"
}

wait_banner() { # FILE: the server said "listening on" (10 s at most)
  for _ in $(seq 100); do grep -q "listening on" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# start_servers TAGSUFFIX NS0 NS1 [--set ...]: two servers; returns their pids in spids
start_servers() {
  local sfx="$1" n0="$2" n1="$3"; shift 3
  run_in "$n0" "$work/s0$sfx" "$bin/ps-server" --config "$job" --shard 0 "$@"; spids=("$!")
  run_in "$n1" "$work/s1$sfx" "$bin/ps-server" --config "$job" --shard 1 "$@"; spids+=("$!")
  wait_banner "$work/s0$sfx.out" && wait_banner "$work/s1$sfx.out"
}
stop_servers() { local p; for p in "${spids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait_pid "$p" 10 || true; done; }

# the last epoch's loss sum as the worker's --events print it (%.17g: every bit)
final_loss() { grep '"ev": "epoch"' "$1" | tail -1 | grep -o '"epoch": [0-9]*, .*"loss_sum": [^,]*' | sed 's/"epochs.*"loss_sum"/loss_sum/'; }

# the loss sum of epoch E as the --events print it
loss_at() { grep '"ev": "epoch"' "$1" | grep "\"epoch\": $2," | tail -1 | grep -o '"loss_sum": [^,]*'; }

# 1a. on loopback: every process in one namespace, servers on 127.0.0.1
lo="$tag-lo"; ip netns add "$lo"; namespaces+=("$lo"); ip -n "$lo" link set lo up
run_in "$lo" "$work/s0.lo" "$bin/ps-server" --config "$job" --shard 0 --bind 127.0.0.1:7070; spids=("$!")
run_in "$lo" "$work/s1.lo" "$bin/ps-server" --config "$job" --shard 1 --bind 127.0.0.1:7071; spids+=("$!")
wait_banner "$work/s0.lo.out" && wait_banner "$work/s1.lo.out" || { cat "$work"/s*.lo.err; exit 1; }
wl=()
for r in 0 1 2; do
  run_in "$lo" "$work/w$r.lo" "$bin/ps-worker" --config "$job" --rank "$r" --events \
    --set 'cluster.servers=["127.0.0.1:7070","127.0.0.1:7071"]'
  wl+=("$!")
done
for r in 0 1 2; do
  rc=0; wait_pid "${wl[$r]}" 300 || rc=$?
  [ "$rc" = 0 ] || { bad "loopback worker $r exited $rc: $(tail -3 "$work/w$r.lo.err")"; }
done
stop_servers

# 1b. across the namespaces
t0=$(date +%s%N)
start_servers .net "$tag-s0" "$tag-s1" || { cat "$work"/s*.net.err; exit 1; }
wn=()
for r in 0 1 2; do
  run_in "$tag-w$r" "$work/w$r.net" "$bin/ps-worker" --config "$job" --rank "$r" --events; wn+=("$!")
done
for r in 0 1 2; do
  rc=0; wait_pid "${wn[$r]}" 300 || rc=$?
  if [ "$rc" != 0 ]; then bad "networked worker $r exited $rc: $(tail -3 "$work/w$r.net.err")"; continue; fi
  a="$(final_loss "$work/w$r.net.out")" b="$(final_loss "$work/w$r.lo.out")"
  if [ -n "$a" ] && [ "$a" = "$b" ] && [ "${a%%,*}" = '"epoch": 50' ]; then
    ok "worker $r across hosts: $a, bit-equal to loopback's"
  else
    bad "worker $r across hosts: final \"$a\", loopback \"$b\""
  fi
done
stop_servers
net_ms=$(( ($(date +%s%N) - t0) / 1000000 ))

# 2. delay and loss on every link. netem when the kernel has it (delay 2ms±1ms, loss 1% on every
# host's egress); otherwise what this kernel has (a Firecracker VM's, no sch_netem): loss with
# nftables in each server's namespace (numgen random: 1% of TCP packets dropped on the way in and
# 1% on the way out, so every worker<->server direction loses 1%) and delay with tbf on every
# host's egress (1 mbit/s with a 1600-byte bucket: a packet behind a full-size one waits ~12 ms,
# a burst queues up to the 100 ms latency bound and is dropped past it). TCP retransmits what is
# lost, so a sync job's numbers do not change: 10 epochs (each lost packet stalls the whole sync
# job for a retransmission timeout, >= 200 ms: 50 epochs took 82 s), whose losses must equal
# loopback's 10th epoch, every bit.
emulation=""
if ip netns exec "$tag-s0" tc qdisc add dev eth0 root netem delay 2ms 2>/dev/null; then
  for h in "${hosts[@]}"; do
    ip netns exec "$tag-$h" tc qdisc replace dev eth0 root netem delay 2ms 1ms loss 1%
  done
  emulation="tc netem: delay 2ms±1ms, loss 1% on every host's egress"
elif command -v nft >/dev/null && ip netns exec "$tag-s0" tc qdisc add dev eth0 root tbf rate 1mbit burst 1600 latency 100ms 2>/dev/null; then
  for h in "${hosts[@]}"; do
    ip netns exec "$tag-$h" tc qdisc replace dev eth0 root tbf rate 1mbit burst 1600 latency 100ms
  done
  for h in s0 s1; do
    ip netns exec "$tag-$h" nft -f - <<'NFT'
table inet psloss {
  chain in { type filter hook input priority 0; policy accept; meta l4proto tcp numgen random mod 100 < 1 counter drop; }
  chain out { type filter hook output priority 0; policy accept; meta l4proto tcp numgen random mod 100 < 1 counter drop; }
}
NFT
  done
  emulation="no netem in this kernel; emulated: nftables numgen drops 1% of TCP packets into and 1% out of each server's host, tbf 1mbit/s burst 1600 B latency 100 ms on every host's egress"
fi
if [ -n "$emulation" ]; then
  echo "netns: phase 2 with $emulation"
  t0=$(date +%s%N)
  start_servers .lossy "$tag-s0" "$tag-s1" || { cat "$work"/s*.lossy.err; exit 1; }
  wd=()
  for r in 0 1 2; do
    run_in "$tag-w$r" "$work/w$r.lossy" "$bin/ps-worker" --config "$job" --rank "$r" --events \
      --set fit.epochs=10 --set cluster.request_timeout_ms=20000
    wd+=("$!")
  done
  for r in 0 1 2; do
    rc=0; wait_pid "${wd[$r]}" 100 || rc=$?
    if [ "$rc" != 0 ]; then bad "worker $r with delay and loss exited $rc: $(tail -3 "$work/w$r.lossy.err")"; continue; fi
    a="$(loss_at "$work/w$r.lossy.out" 10)" b="$(loss_at "$work/w$r.lo.out" 10)"
    if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(final_loss "$work/w$r.lossy.out" | cut -d, -f1)" = '"epoch": 10' ]; then
      ok "worker $r with delay and loss: epoch 10 of 10, $a, bit-equal to loopback's epoch 10"
    else
      bad "worker $r with delay and loss: epoch 10 \"$a\", loopback's \"$b\""
    fi
  done
  stop_servers
  echo "netns: phase 2 took $(( ($(date +%s%N) - t0) / 1000000 )) ms (phase 1b: ${net_ms} ms)"
  if [ "${emulation#no netem}" != "$emulation" ]; then # the drops really happened
    drops=0
    for h in s0 s1; do
      for n in $(ip netns exec "$tag-$h" nft list table inet psloss | grep -o 'packets [0-9]*' | cut -d' ' -f2); do
        drops=$((drops + n))
      done
    done
    if [ "$drops" -gt 0 ]; then ok "nftables dropped $drops TCP packets on the servers' hosts"; else bad "nftables dropped no packet"; fi
    for h in s0 s1; do ip netns exec "$tag-$h" nft delete table inet psloss 2>/dev/null || true; done
  fi
  for h in "${hosts[@]}"; do ip netns exec "$tag-$h" tc qdisc del dev eth0 root 2>/dev/null || true; done
else
  echo "netns: SKIPPED phase 2: neither tc netem nor nftables (nft) with tc tbf work here"
  skipped=$((skipped + 1))
fi

# 3. server 1's link goes down while the workers train
start_servers .down "$tag-s0" "$tag-s1" || { cat "$work"/s*.down.err; exit 1; }
wx=()
for r in 0 1 2; do
  run_in "$tag-w$r" "$work/w$r.down" "$bin/ps-worker" --config "$job" --rank "$r" --set fit.epochs=100000 \
    --set cluster.recover_timeout_ms=5000
  wx+=("$!")
done
for _ in $(seq 300); do grep -q "Epoch 3/" "$work/w0.down.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Epoch 3/" "$work/w0.down.out" || bad "workers did not reach epoch 3 before the link went down"
ip -n "$br" link set p-s1 down        # the switch port: s1 neither answers nor resets
down_at=$(date +%s%N)
for r in 0 1 2; do
  rc=0; wait_pid "${wx[$r]}" 30 || rc=$?
  took=$(( ($(date +%s%N) - down_at) / 1000000 ))
  msg="$(grep -m1 "server 1 (10.77.0.11:7070)" "$work/w$r.down.err" || true)"
  if [ "$rc" = 1 ] && [ -n "$msg" ] && [ "$took" -lt 30000 ]; then
    ok "worker $r: link down -> exit 1 after ${took} ms: $msg"
  else
    bad "worker $r: link down -> exit $rc after ${took} ms (124: still running at 30 s): $(tail -2 "$work/w$r.down.err")"
  fi
done
stop_servers

echo "netns: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
