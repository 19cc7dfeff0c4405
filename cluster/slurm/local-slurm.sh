#!/usr/bin/env bash
# A throwaway single-node Slurm for CI and local testing (no systemd, no /etc/slurm, no system
# munged needed). Everything lives under DIR: munge key, munged and its socket, slurm.conf,
# controller state, slurmd spool, pid files and logs.
#
#   cluster/slurm/local-slurm.sh start DIR   # munged + slurmctld + slurmd; waits for the node idle
#   . DIR/env.sh                             # SLURM_CONF=DIR/slurm.conf for sinfo/srun/sbatch/...
#   srun -n 2 hostname; sbatch -n 2 job.sh
#   cluster/slurm/local-slurm.sh stop DIR    # cancels jobs, stops the daemons (safe to repeat)
#   cluster/slurm/local-slurm.sh status DIR  # sinfo + squeue, exit 1 when not running
#
# Run as root (SlurmUser=root, jobs run as the submitting user). Needs the Debian packages
# slurmctld, slurmd, slurm-client, munge (and libpmix2 for srun --mpi=pmix, the default here).
#
# Environment knobs (start):
#   LOCAL_SLURM_CPUS     CPUs the node advertises (default: max(4, cores)). More than the real
#                        cores is allowed (SlurmdParameters=config_overrides), so 4 tasks fit on
#                        a 2-core machine.
#   LOCAL_SLURM_PORT     first port tried for slurmctld (slurmd gets the next one); the first
#                        free pair from there is used (default 16817).
#   LOCAL_SLURM_TIMEOUT  seconds to wait for the node to become idle (default 60).
#   LOCAL_SLURM_CRED_EXPIRE  AuthInfo cred_expire (default 10): a requeued job (scontrol requeue)
#                        starts again after this + 1 s instead of Slurm's default 121 s.
#
# Daemons are recognised by LOCAL_SLURM_DAEMON_DIR=DIR in their environment (set only for the
# daemons), slurmstepd and job processes by SLURM_CONF=DIR/slurm.conf, so stop never touches
# another Slurm or munged.
set -euo pipefail

die() { echo "local-slurm: $*" >&2; exit 1; }
log() { echo "local-slurm: $*" >&2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
[[ $cmd == start || $cmd == stop || $cmd == status ]] || usage
dir=$(realpath -m -- "$2")

conf=$dir/slurm.conf
munge_dir=$dir/munge          # socket, pid, log (0755: every user may reach the socket)
munge_key=$dir/munge-key/munge.key   # key and PRNG seed (0700)
munge_sock=$munge_dir/munge.socket
munge_pid=$munge_dir/munged.pid
ctld_pid=$dir/run/slurmctld.pid
slurmd_pid=$dir/run/slurmd.pid
node=$(hostname -s)
marker="LOCAL_SLURM_DAEMON_DIR=$dir"

# True when PID is alive and one of our daemons (munged, slurmctld, slurmd).
ours() {
  local pid=$1
  [[ -n $pid && -r /proc/$pid/environ ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "$marker"
}
pid_of() { if [[ -s $1 ]]; then cat "$1" 2>/dev/null || true; fi; }
running() { local p; p=$(pid_of "$1"); [[ -n $p ]] && ours "$p"; }

# SIGTERM to the pid in FILE if it is ours; SIGKILL if it is still there after SECS.
stop_pidfile() {
  local file=$1 name=$2 secs=$3 pid i
  pid=$(pid_of "$file")
  if [[ -n $pid ]] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      ours "$pid" || break
      sleep 0.1
    done
    if ours "$pid"; then
      log "$name (pid $pid) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# PIDs of every process whose environment carries the daemon marker, slurmstepd processes of
# this cluster (slurmd starts them with a clean environment holding only SLURM_CONF = our
# slurm.conf), job processes of this cluster (SLURM_JOB_ID set and SLURM_CONF = our slurm.conf),
# and all their descendants.
cluster_pids() {
  local roots=() p envs
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    envs=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ") || continue
    if grep -qxF -- "$marker" <<<"$envs" ||
      { grep -qxF -- "SLURM_CONF=$conf" <<<"$envs" &&
        { grep -q '^SLURM_JOB_ID=' <<<"$envs" ||
          [[ $(cat 2>/dev/null <"/proc/$p/comm") == slurmstepd ]]; }; }; then
      roots+=("$p")
    fi
  done
  ((${#roots[@]})) || return 0
  # Descendants, from the ppid field of /proc/PID/stat (no dependency on procps).
  local -A keep=() parent=()
  local line rest changed
  for p in "${roots[@]}"; do keep[$p]=1; done
  for p in /proc/[0-9]*; do
    line=$(cat 2>/dev/null <"$p/stat") || continue
    rest=${line##*) }           # after "pid (comm) ": state ppid ...
    rest=${rest#* }
    parent[${p#/proc/}]=${rest%% *}
  done
  changed=1
  while ((changed)); do
    changed=0
    for p in "${!parent[@]}"; do
      if [[ -z ${keep[$p]:-} && -n ${keep[${parent[$p]}]:-} ]]; then keep[$p]=1; changed=1; fi
    done
  done
  for p in "${!keep[@]}"; do if [[ $p != "$$" ]]; then echo "$p"; fi; done
}

write_env() {
  cat >"$dir/env.sh" <<EOF
# Source this to use the local Slurm in $dir (written by local-slurm.sh).
export SLURM_CONF=$conf
export LOCAL_SLURM_DIR=$dir
# munge/unmunge need the socket explicitly: munge -S \$LOCAL_SLURM_MUNGE_SOCKET -n | unmunge -S ...
export LOCAL_SLURM_MUNGE_SOCKET=$munge_sock
EOF
}

port_free() {
  if command -v ss >/dev/null; then
    [[ -z $(ss -Htln "sport = :$1" 2>/dev/null) ]]
  else  # no iproute2: free when nothing accepts a connection there
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 1; fi
  fi
}

dump_logs() {
  local f
  for f in "$munge_dir/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; do
    [[ -f $f ]] || continue
    echo "----- $f (last 40 lines) -----" >&2
    tail -n 40 "$f" >&2
  done
}

do_stop() {
  local ids pid pids i
  if running "$ctld_pid" && [[ -f $conf ]]; then
    ids=$(SLURM_CONF=$conf timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${ids// /} ]]; then
      log "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      SLURM_CONF=$conf timeout 10 scancel --full --signal=KILL $ids 2>/dev/null || true
      # shellcheck disable=SC2086
      SLURM_CONF=$conf timeout 10 scancel $ids 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        [[ -z $(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2>/dev/null) ]] && break
        sleep 0.1
      done
    fi
  fi
  # Remember job processes and slurmsteps before their parents go away.
  pids=$(cluster_pids | tr '\n' ' ')
  stop_pidfile "$slurmd_pid" slurmd 10
  stop_pidfile "$ctld_pid" slurmctld 10
  for pid in $pids $(cluster_pids); do
    [[ $pid == "$(pid_of "$munge_pid")" ]] && continue
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_pidfile "$munge_pid" munged 5
  rm -f "$munge_sock" "$munge_sock.lock"
}

wait_idle() {
  local timeout=$1 start state
  start=$SECONDS
  while ((SECONDS - start < timeout)); do
    state=$(SLURM_CONF=$conf timeout 5 sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1 || true)
    case $state in
      idle* | mixed* | allocated*) return 0 ;;
      drain*) break ;;  # e.g. fewer CPUs than configured
    esac
    if ! running "$ctld_pid" || ! running "$slurmd_pid"; then break; fi
    sleep 0.2
  done
  log "node $node is not idle after $((SECONDS - start)) s (state: '${state:-none}')"
  SLURM_CONF=$conf timeout 5 scontrol show node "$node" >&2 2>/dev/null || true
  return 1
}

do_start() {
  local t0 cpus ncores port i
  t0=$(date +%s%N)
  [[ $EUID -eq 0 ]] || die "run as root (SlurmUser=root)"
  for b in munged mungekey slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null ||
      die "$b not found (apt-get install munge slurmctld slurmd slurm-client)"
  done
  ((${#munge_sock} < 100)) || die "DIR too long for a unix socket path: $munge_sock"

  if running "$munge_pid" && running "$ctld_pid" && running "$slurmd_pid"; then
    log "already running in $dir"
    write_env
    wait_idle "${LOCAL_SLURM_TIMEOUT:-60}" || { dump_logs; exit 1; }
    return 0
  fi
  # Partly up (a crash, or a start that failed half-way): start again from a clean slate.
  do_stop

  mkdir -p "$dir"/{state,spool,log,run,tmp}
  mkdir -p "$munge_dir" "${munge_key%/*}"
  chmod 0755 "$munge_dir"
  chmod 0700 "${munge_key%/*}"

  # --- munge, on its own socket ---
  if [[ ! -s $munge_key ]]; then
    mungekey --create --keyfile="$munge_key" 2>/dev/null ||
      dd if=/dev/urandom of="$munge_key" bs=1024 count=1 status=none
  fi
  chmod 0600 "$munge_key"
  # --force: run even if a parent of DIR is group/world-writable (munged refuses otherwise).
  env "$marker" munged --force --socket="$munge_sock" --key-file="$munge_key" \
    --pid-file="$munge_pid" --log-file="$munge_dir/munged.log" \
    --seed-file="${munge_key%/*}/munged.seed" ||
    { dump_logs; die "munged failed to start"; }
  for ((i = 0; i < 50; i++)); do [[ -S $munge_sock ]] && break; sleep 0.1; done
  [[ -S $munge_sock ]] || { dump_logs; die "munged socket $munge_sock did not appear"; }

  # --- slurm.conf ---
  ncores=$(nproc)
  cpus=${LOCAL_SLURM_CPUS:-$((ncores > 4 ? ncores : 4))}
  port=${LOCAL_SLURM_PORT:-16817}
  for ((i = 0; i < 100; i++)); do
    port_free "$port" && port_free $((port + 1)) && break
    port=$((port + 2))
  done
  : >"$dir/plugstack.conf"  # no SPANK plugins (ignore /etc/slurm/plugstack.conf)
  cat >"$conf" <<EOF
# Written by local-slurm.sh for a throwaway single-node cluster in $dir.
ClusterName=hfrunlocal
# NodeAddr/controller address 127.0.0.1: works even when \`hostname -s\` does not resolve.
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (BeginTime =
# requeue time + cred_expire + 1; default 120 s).
AuthInfo=socket=$munge_sock,cred_expire=${LOCAL_SLURM_CRED_EXPIRE:-10}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
TmpFS=$dir/tmp
# No cgroups (containers and VMs without systemd often lack a usable cgroup tree).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Start batch jobs at once (default: up to 3 s later) and pick up requeued jobs whose BeginTime
# has passed within a second (default: the next 30 s backfill pass).
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Trust the CPU count below even when it exceeds the real cores (oversubscribed CI machine).
SlurmdParameters=config_overrides
MpiDefault=pmix
MailProg=/bin/true
# Reject at submit what can never run (e.g. more tasks than CPUs) instead of pending forever.
EnforcePartLimits=ALL
JobRequeue=1
KillWait=30
ReturnToService=2
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 \
  State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  write_env

  # --- daemons ---
  # -c: a cold start, without jobs left in DIR/state by an earlier run (a throwaway cluster
  # should not resurrect them).
  env "$marker" SLURM_CONF="$conf" slurmctld -c -f "$conf" ||
    { dump_logs; die "slurmctld failed to start"; }
  env "$marker" SLURM_CONF="$conf" slurmd -f "$conf" ||
    { dump_logs; die "slurmd failed to start"; }
  for ((i = 0; i < 50; i++)); do
    running "$ctld_pid" && running "$slurmd_pid" && break
    sleep 0.1
  done
  if ! wait_idle "${LOCAL_SLURM_TIMEOUT:-60}"; then
    dump_logs
    do_stop
    die "start failed (logs above; state left in $dir)"
  fi
  local ms=$((($(date +%s%N) - t0) / 1000000))
  log "up in $((ms / 1000)).$(printf %03d $((ms % 1000))) s:" \
    "node $node, $cpus CPUs, ports $port/$((port + 1)); . $dir/env.sh"
}

case $cmd in
  start) do_start ;;
  stop)
    do_stop
    log "stopped ($dir)"
    ;;
  status)
    if ! running "$ctld_pid" || ! running "$slurmd_pid" || ! running "$munge_pid"; then
      log "not running in $dir"
      exit 1
    fi
    SLURM_CONF=$conf sinfo
    SLURM_CONF=$conf squeue
    ;;
esac
