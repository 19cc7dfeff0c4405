#!/usr/bin/env bash
# Multi-node runs of `hfrun -np 4 --hostfile` without a cluster: two nodes are network namespaces
# joined by a veth pair (netns_nodes.sh), 2 ranks each, mpirun reaching node b through an rsh
# agent that uses `ip netns exec` instead of ssh.
#  a. 4 ranks over 2 nodes: ranks 2-3 really run in node b's namespace, and the losses equal
#     those of `hfrun -np 4 --oversubscribe` on one node with Open MPI's sums (exact strings).
#  b. a node that never comes up (the hostfile names a third host whose agent fails: an address
#     no node has, then a node whose namespace does not exist): the job ends non-zero, in bounded
#     time, with a report, leaving no process.
#  c. a node that dies mid-run (kill -9 of every process in node b after step 2): the same.
#     And node b's link goes down after step 2 (HFRUN_TEST_LINK_CUT=0 skips this; see c2 below).
#  b3. a third host whose agent hangs like ssh to a silent host: the launcher ends the job after
#     distributed.timeout_s, naming the ranks that never started (HFRUN_TEST_HANG=0 skips it).
#  Every report line is checked: it names the node or the ranks, and the cause.
# Prints timings; exit 0 on success, 77 when the machine cannot create namespaces (SKIP), 1 on
# failure. Always removes its namespaces and processes.
# Usage: test_multinode.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -f "$2" ]; then
  echo "usage: $0 PATH/TO/hfrun GPT2_TOKENIZER_JSON"
  exit 1
fi
HFRUN="$(readlink -f "$1")"
GPT2="$(readlink -f "$2")"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/cluster/netns_nodes.sh
source "$HERE/netns_nodes.sh"
netns_check_prereqs || exit 77

export OMP_NUM_THREADS=1
TMP="$(mktemp -d /tmp/hfrun-multinode-XXXXXX)"
PREFIX="hfn$$-"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  netns_down "$PREFIX"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM
fail=0
TIMINGS=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
timing() {
  TIMINGS+=("$1")
  echo "  time: $1"
}

tiny_corpus "$TMP/f.txt"
cfg() { # cfg NAME MAX_STEPS: writes $TMP/NAME.yaml with output_dir $TMP/NAME
  tiny_cfg "$TMP/$1" "$TMP/f.txt" "$2" "checkpoint: {every: 2, keep: 3}" \
    "distributed: {timeout_s: 20}" > "$TMP/$1.yaml"
}

# Every rank starts through this fork agent (mpirun's orte_fork_agent): it records the rank's
# pid, network namespace and hostname, then execs the rank (same pid).
cat > "$TMP/rank-probe" << 'PROBE'
#!/bin/sh
echo "$OMPI_COMM_WORLD_RANK $$ $(readlink /proc/self/ns/net) $(hostname)" >> "$HFRUN_TEST_RANKS"
exec "$@"
PROBE
chmod +x "$TMP/rank-probe"

# start_job NAME ARGS...: `hfrun ARGS $TMP/NAME.yaml` in node a, in the background, output in
# $TMP/NAME.log, rank records in $TMP/NAME.ranks.
start_job() {
  local name="$1"
  shift
  : > "$TMP/$name.ranks"
  JOB_T0=$(now)
  HFRUN_TEST_RANKS="$TMP/$name.ranks" OMPI_MCA_orte_fork_agent="$TMP/rank-probe" \
    netns_run a "$HFRUN" "$@" "$TMP/$name.yaml" > "$TMP/$name.log" 2>&1 &
  JOB_PID=$!
}
kill_nodes() { # every process in both nodes (the launcher, mpirun, the agents, orteds, ranks)
  local p
  for p in $(netns_pids a) $(netns_pids b); do kill -9 "$p" 2> /dev/null; done
}
# wait_job MAX_S: waits up to MAX_S seconds for the job; JOB_RC is its exit status, or 124 when
# it still ran (then everything in the nodes is killed).
wait_job() {
  local t0
  t0=$(now)
  while kill -0 "$JOB_PID" 2> /dev/null; do
    if awk -v t="$(since "$t0")" -v m="$1" 'BEGIN { exit !(t >= m) }'; then
      kill_nodes
      wait "$JOB_PID" 2> /dev/null
      JOB_RC=124
      return
    fi
    sleep 0.1
  done
  wait "$JOB_PID"
  JOB_RC=$?
}
# wait_step NAME STEP MAX_S: until $TMP/NAME/metrics.jsonl logs STEP (1 if it does, 0 if the job
# ended or MAX_S passed first).
wait_step() {
  local t0
  t0=$(now)
  while ! grep -q "\"step\": $2," "$TMP/$1/metrics.jsonl" 2> /dev/null; do
    kill -0 "$JOB_PID" 2> /dev/null || return 1
    awk -v t="$(since "$t0")" -v m="$3" 'BEGIN { exit !(t >= m) }' && return 1
    sleep 0.1
  done
  return 0
}
# no_survivors: 0 when no process is left in either node within 10 s (the launcher has exited).
no_survivors() {
  local left=""
  for _ in $(seq 100); do
    left="$(netns_pids a) $(netns_pids b)"
    [ -z "${left// /}" ] && return 0
    sleep 0.1
  done
  echo "FAIL: processes survive the job:"
  local p
  for p in $left; do ps -o pid=,args= -p "$p" | cut -c1-160; done
  kill_nodes
  return 1
}
# The launcher's report and mpirun's lines, which the failure cases print verbatim.
report_lines() { grep -E '^(hfrun|mpirun):' "$1"; }

netns_up "$PREFIX" || {
  echo "FAIL: netns_up"
  exit 1
}
echo "nodes: $(netns_ns a) ($NETNS_ADDR_a) and $(netns_ns b) ($NETNS_ADDR_b); hostfile:"
sed 's/^/  /' "$NETNS_HOSTFILE"
env | grep '^OMPI_MCA_' | sort | sed 's/^/  /'
NET_A="net:[$(stat -L -c %i "/run/netns/$(netns_ns a)")]"
NET_B="net:[$(stat -L -c %i "/run/netns/$(netns_ns b)")]"

# --- a. 4 ranks on 2 nodes = 4 ranks on 1 node ---------------------------------------------
echo "== a. hfrun -np 4 --hostfile (2 nodes x 2 ranks) vs hfrun -np 4 --oversubscribe (1 node)"
# timed_run NAME LABEL ARGS...: a 6-step job that must succeed; records its timings.
timed_run() {
  local name="$1" label="$2" t_first t_all
  shift 2
  cfg "$name" 6
  start_job "$name" "$@"
  wait_step "$name" 1 300
  t_first=$(since "$JOB_T0")
  wait_job 300
  t_all=$(since "$JOB_T0")
  [ "$JOB_RC" -eq 0 ] || {
    echo "FAIL: $label exited $JOB_RC"
    cat "$TMP/$name.log"
    fail=1
  }
  timing "a. $label: first step ${t_first}s, whole job ${t_all}s"
}
# The one-node run leaves its sums to Open MPI, as the two-node job's world group does (the
# shared-memory sums of 4 ranks on one node add in another order).
export HFRUN_SHM_COLLECTIVES=0
timed_run one "one node, 4 ranks" -np 4 --oversubscribe
unset HFRUN_SHM_COLLECTIVES
timed_run two "two nodes, 2+2 ranks" -np 4 --hostfile "$NETNS_HOSTFILE"

echo "  ranks (rank pid netns host):"
sort -n "$TMP/two.ranks" | sed 's/^/    /'
for r in 0 1 2 3; do
  want="$NET_A"
  [ $r -ge 2 ] && want="$NET_B"
  got=$(awk -v r=$r '$1 == r { print $3 }' "$TMP/two.ranks")
  if [ "$got" != "$want" ]; then
    echo "FAIL: rank $r ran in network namespace '${got:-none}', not $want (node $([ $r -ge 2 ] && echo b || echo a))"
    fail=1
  fi
done

if [ "$(losses "$TMP/one/metrics.jsonl" | wc -l)" -ne 6 ]; then
  echo "FAIL: the one-node run did not log 6 losses"
  fail=1
elif [ "$(losses "$TMP/one/metrics.jsonl")" = "$(losses "$TMP/two/metrics.jsonl")" ]; then
  echo "  losses equal (exact): $(losses "$TMP/two/metrics.jsonl" | tr '\n' ' ')"
else
  echo "FAIL: two-node losses differ from one-node losses:"
  paste <(losses "$TMP/one/metrics.jsonl") <(losses "$TMP/two/metrics.jsonl") |
    awk '{ d = ($1 > $2 ? $1 - $2 : $2 - $1) / ($1 < 0 ? -$1 : $1); if (d > m) m = d; print "    " $0 }
         END { printf "    max relative difference %.3g\n", m }'
  fail=1
fi
for f in final/model.safetensors checkpoints/step-00000006/manifest.json; do
  [ -f "$TMP/two/$f" ] || {
    echo "FAIL: the two-node run wrote no $f"
    fail=1
  }
done
no_survivors || fail=1

# --- b. a node that never comes up ---------------------------------------------------------
# expect_failed_job NAME MAX_S: the job NAME (started) ends non-zero within MAX_S seconds with a
# report and leaves no process; prints the report verbatim.
expect_failed_job() {  # expect_failed_job NAME MAX_S REPORT_REGEX
  local name="$1" max="$2" want="$3" t0
  t0=$(now)
  wait_job "$max"
  local took
  took=$(since "$t0")
  echo "  exit $JOB_RC after ${took}s; hfrun's report, verbatim:"
  report_lines "$TMP/$name.log" | sed 's/^/    | /'
  if [ "$JOB_RC" -eq 124 ]; then
    echo "FAIL: $name: the job still ran after ${max}s (hang)"
    echo "  its output:"
    sed 's/^/    | /' "$TMP/$name.log"
    fail=1
  elif [ "$JOB_RC" -eq 0 ]; then
    echo "FAIL: $name: the job exited 0"
    fail=1
  fi
  if ! grep -q '^hfrun: job failed' "$TMP/$name.log"; then
    echo "FAIL: $name: no 'hfrun: job failed' line"
    fail=1
  fi
  if ! grep -m1 '^hfrun: job failed' "$TMP/$name.log" | grep -qE -- "$want"; then
    echo "FAIL: $name: the report does not match /$want/"
    fail=1
  fi
  no_survivors || fail=1
  FAILED_TOOK="$took"
}

NO_NODE_ADDR="${NETNS_ADDR_a%.1}.3"
echo "== b1. the hostfile names a third host, $NO_NODE_ADDR, that no node has (agent: ssh-like 'No route to host')"
cfg nonode 6
{
  cat "$NETNS_HOSTFILE"
  echo "$NO_NODE_ADDR slots=2"
} > "$TMP/hosts-nonode"
start_job nonode -np 6 --hostfile "$TMP/hosts-nonode"
expect_failed_job nonode 120 \
  "^hfrun: job failed: a node never came up \\(ranks [0-9, ]+ never started\\): its Open MPI daemon did not start: ssh: connect to host $NO_NODE_ADDR"
timing "b1. unreachable third host: failure reported after ${FAILED_TOOK}s"

echo "== b2. the third host maps to a namespace that does not exist (ip netns exec fails)"
cfg nons 6
netns_map_host nodec "$(netns_ns c)"
{
  cat "$NETNS_HOSTFILE"
  echo "nodec slots=2"
} > "$TMP/hosts-nons"
start_job nons -np 6 --hostfile "$TMP/hosts-nons"
expect_failed_job nons 120 \
  "^hfrun: job failed: a node never came up .*: its Open MPI daemon did not start: netns agent: the command on nodec .* ended with status 255"
timing "b2. missing third node: failure reported after ${FAILED_TOOK}s"

if [ "${HFRUN_TEST_HANG:-1}" = 1 ]; then
  echo "== b3. the third host's agent hangs ${NETNS_HANG_S:-130}s like ssh to a silent host: the launcher ends the job after distributed.timeout_s (20 s)"
  cfg hang 6
  netns_map_host nodeh '!hang'
  {
    cat "$NETNS_HOSTFILE"
    echo "nodeh slots=2"
  } > "$TMP/hosts-hang"
  start_job hang -np 6 --hostfile "$TMP/hosts-hang"
  expect_failed_job hang 60 \
    "^hfrun: job failed: ranks [0-9, ]+ did not start within 20 s \\(distributed.timeout_s\\): a node never came up"
  timing "b3. hanging third host: failure reported after ${FAILED_TOOK}s"
fi

# --- c. a node that dies mid-run -----------------------------------------------------------
# start_long NAME: a long two-node run, waits for step 2; prints the timings.
start_long() {
  cfg "$1" 100000
  start_job "$1" -np 4 --hostfile "$NETNS_HOSTFILE"
  if ! wait_step "$1" 1 300; then
    echo "FAIL: $1: no step 1 within 300 s"
    sed 's/^/    | /' "$TMP/$1.log"
    fail=1
    return 1
  fi
  local t1
  t1=$(since "$JOB_T0")
  if ! wait_step "$1" 2 120; then
    echo "FAIL: $1: no step 2"
    sed 's/^/    | /' "$TMP/$1.log"
    fail=1
    return 1
  fi
  timing "$2: first step ${t1}s after the start, step 2 after $(since "$JOB_T0")s"
}

echo "== c1. node b dies after step 2 (kill -9 of every process in its namespace)"
if start_long die "c1. node b dies"; then
  b_ranks=""
  for p in $(netns_pids b); do
    r=$(tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ -n "$r" ] && b_ranks="$b_ranks $r"
  done
  # shellcheck disable=SC2086 # one rank per word
  # Unique: a rank's own children (a sanitizer's symbolizer) inherit its environment.
  b_ranks=$(printf '%s\n' $b_ranks | sort -nu | tr '\n' ' ')
  echo "  ranks in node b (ip netns pids): $b_ranks"
  [ "$b_ranks" = "2 3 " ] || {
    echo "FAIL: node b's namespace holds ranks '$b_ranks', not 2 3"
    fail=1
  }
  # shellcheck disable=SC2046 # one pid per word
  kill -9 $(netns_pids b)
  expect_failed_job die 60 \
    "^hfrun: job failed: (lost node ${NETNS_ADDR_b}: mpirun lost contact with its daemon there|a node's Open MPI daemon ended mid-run)"
  timing "c1. node b killed: failure reported after ${FAILED_TOOK}s"
else
  kill_nodes
fi

# The ranks on both sides of a cut link fail their collective after distributed.timeout_s (20 s)
# and exit; mpirun and node b's orted would then wait on each other's unanswered TCP connection
# until the kernel gives up (~15 min with Linux's default net.ipv4.tcp_retries2, kept here;
# HFRUN_TEST_TCP_RETRIES2=N sets it in both nodes). The launcher ends the job 15 s after the
# first rank's failure record instead. Node b's ranks cannot answer the launcher's request for
# their flight records, and the report says so.
if [ "${HFRUN_TEST_LINK_CUT:-1}" = 1 ]; then
  retries2="${HFRUN_TEST_TCP_RETRIES2-}"
  echo "== c2. node b's link goes down after step 2 (distributed.timeout_s 20, tcp_retries2 ${retries2:-default})"
  if start_long cut "c2. link cut"; then
    [ -n "$retries2" ] && netns_sysctl "net.ipv4.tcp_retries2=$retries2"
    netns_link b down
    max=120
    expect_failed_job cut "${HFRUN_TEST_LINK_CUT_MAX_S:-$max}" \
      "^hfrun: job failed: rank [01] \\(host ${PREFIX}a, pid [0-9]+\\): exit [0-9]+: .*timed out after 20s.*; rank 2 \\(host ${PREFIX}b, pid [0-9]+\\) did not answer .*; rank 3 \\(host ${PREFIX}b, pid [0-9]+\\) did not answer"
    echo "  the ranks' lines after the cut:"
    grep -E '^\[rank [0-9]+\] .*(watchdog|error|failed)' "$TMP/cut.log" | sed 's/^/    | /'
    timing "c2. link cut: failure reported after ${FAILED_TOOK}s"
  else
    kill_nodes
  fi
fi

echo "== timings"
printf '  %s\n' "${TIMINGS[@]}"
if [ $fail -ne 0 ]; then
  echo "FAILED"
  exit 1
fi
echo "all multi-node checks passed"
exit 0
