#!/usr/bin/env bash
# expect_job_failure.sh MAX_SECONDS REGEX CMD...: passes when CMD exits non-zero within
# MAX_SECONDS and its output (stdout + stderr) matches the extended regex REGEX.
#
# CMD runs in a session of its own. When it is still running at the deadline, the processes and
# threads left in that session are printed (state, where each sleeps in the kernel, how long it
# has run) before the session is ended: a rare hang must say which process stayed (a rank, or
# mpiexec itself) from the one run that showed it.
set -uo pipefail
max_s="$1"
regex="$2"
shift 2
out_file="$(mktemp)"
trap 'rm -f "$out_file"' EXIT
start=$(date +%s)
# In a non-interactive shell a background job is no process group leader, so setsid runs CMD
# in place (same pid) as the leader of a new session.
setsid "$@" >"$out_file" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ $(($(date +%s) - start)) -lt "$max_s" ]; do
  sleep 0.2
done
hung=0
if kill -0 "$pid" 2>/dev/null; then
  hung=1
  echo "--- still running after ${max_s}s, the processes of session $pid:"
  ps -s "$pid" -o pid,ppid,stat,etimes,wchan:28,args 2>&1
  echo "--- their threads:"
  ps -L -s "$pid" -o pid,tid,stat,wchan:28,comm 2>&1
  for p in $(ps -s "$pid" -o pid= 2>/dev/null); do
    if [ -r "/proc/$p/stack" ]; then
      echo "--- kernel stack of $p ($(cat "/proc/$p/comm" 2>/dev/null)):"
      cat "/proc/$p/stack" 2>/dev/null
    fi
  done
  # As timeout(1) would: CMD first (mpiexec ends its ranks), then whatever is left of the
  # session (Open MPI puts each rank in a process group of its own).
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 25); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  for _ in $(seq 25); do
    left="$(ps -s "$pid" -o pid= 2>/dev/null)"
    [ -z "$left" ] && break
    kill -KILL $left 2>/dev/null
    sleep 0.2
  done
fi
wait "$pid"
rc=$?
elapsed=$(($(date +%s) - start))
out="$(cat "$out_file")"
printf '%s\n' "$out"
echo "exit status $rc after ${elapsed}s"
if [ "$hung" -eq 1 ]; then echo "FAIL: the job hung (ended after ${max_s}s)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if ! grep -qE -- "$regex" <<<"$out"; then echo "FAIL: no line matches: $regex"; exit 1; fi
echo "ok: failed as expected"
