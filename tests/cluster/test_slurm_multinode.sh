#!/usr/bin/env bash
# hfrun under a real two-node Slurm on one machine: the nodes are the network namespaces of
# netns_nodes.sh (a and b, joined by a veth pair). Node a runs slurmctld and slurmd, node b a
# second slurmd (slurmd -N); each daemon also gets the node's hostname (a UTS namespace) and a
# private TmpFS (a bind mount in its mount namespace, so PMIx's per-step client directories of the
# two nodes do not collide on the shared filesystem). One munged in the root namespace serves both
# (its socket is a file). sbatch of cluster/slurm/train-multinode.sbatch with --nodes=2
# --ntasks-per-node=2 (srun --mpi=pmix) must complete with ExitCode 0:0, run ranks 2-3 in node b's
# namespace (a probe in front of hfrun records each rank's network namespace) and log exactly the
# losses of `hfrun -np 4 --oversubscribe` (plain mpirun, one node).
# Prints the cluster start time and sbatch to the first step.
# Usage: test_slurm_multinode.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON SOURCE_DIR
# Exit 77 (skipped) when not root, Slurm/munge are missing or namespaces cannot be created.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/lib/train_job.sh
source "$HERE/../lib/train_job.sh"
# shellcheck source=tests/cluster/netns_nodes.sh
source "$HERE/netns_nodes.sh"
if [ $# -ne 3 ] || [ ! -x "$1" ] || [ ! -f "$2" ]; then
  echo "usage: $0 PATH/TO/hfrun GPT2_TOKENIZER_JSON SOURCE_DIR"
  exit 1
fi
HFRUN="$(readlink -f "$1")"
GPT2="$(readlink -f "$2")"
SRC="$(readlink -f "$3")"
if [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs root (Slurm daemons, network namespaces)"; exit 77; fi
for b in slurmctld slurmd sbatch munged mungekey; do
  command -v "$b" > /dev/null || {
    echo "SKIP: $b not found (Debian's slurmctld, slurmd, slurm-client and munge: scripts/install-deps.sh)"
    exit 77
  }
done
netns_check_prereqs || exit 77

export OMP_NUM_THREADS=1
TMP="$(mktemp -d /tmp/hfrun-slurmmn-XXXXXX)"
chmod 755 "$TMP"
PREFIX="hfs$$-"
CONF="$TMP/slurm.conf"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  netns_down "$PREFIX" # SIGKILLs everything in the nodes: slurmctld, slurmds, slurmstepds, ranks
  [ -s "$TMP/munge/munged.pid" ] && kill "$(cat "$TMP/munge/munged.pid")" 2> /dev/null
  for _ in $(seq 50); do [ -S "$TMP/munge/sock" ] || break; sleep 0.1; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM
fail=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

tiny_corpus "$TMP/f.txt"
cfg() { # cfg NAME: $TMP/NAME.yaml, output_dir $TMP/NAME
  tiny_cfg "$TMP/$1" "$TMP/f.txt" 20 "scheduler: {type: cosine, warmup_steps: 10}" \
    "checkpoint: {every: 500, keep: 2}" > "$TMP/$1.yaml"
}

# The reference: plain mpirun, 4 ranks on this machine (before netns_up's OMPI_MCA_* exports),
# its sums left to Open MPI as the two-node job's (the shared-memory sums of 4 ranks on one
# node add in another order).
cfg ref
HFRUN_SHM_COLLECTIVES=0 "$HFRUN" -np 4 --oversubscribe "$TMP/ref.yaml" > "$TMP/ref.log" 2>&1 || {
  echo "FAIL: the mpirun reference"; cat "$TMP/ref.log"; exit 1
}

# --- the cluster ---
t0=$(now)
netns_up "$PREFIX" || { echo "FAIL: netns_up"; exit 1; }
A=$(netns_ns a) B=$(netns_ns b)  # namespace = hostname = Slurm node name
mkdir -p "$TMP"/{munge,state,log,run,tmpfs,tmp-a,tmp-b,"spool-$A","spool-$B"}
mungekey --create --keyfile="$TMP/munge/munge.key" 2> /dev/null ||
  dd if=/dev/urandom of="$TMP/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$TMP/munge/munge.key"
munged --force --socket="$TMP/munge/sock" --key-file="$TMP/munge/munge.key" \
  --pid-file="$TMP/munge/munged.pid" --log-file="$TMP/munge/munged.log" \
  --seed-file="$TMP/munge/munged.seed" || { echo "FAIL: munged did not start"; exit 1; }
: > "$TMP/plugstack.conf"
cat > "$CONF" << EOF
ClusterName=hfrunmn
SlurmctldHost=$A($NETNS_ADDR_a)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$TMP/munge/sock
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool-%n
SlurmctldPidFile=$TMP/run/slurmctld.pid
SlurmdPidFile=$TMP/run/slurmd-%n.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd-%n.log
PlugStackConfig=$TMP/plugstack.conf
TmpFS=$TMP/tmpfs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
NodeName=$A NodeAddr=$NETNS_ADDR_a CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 State=UNKNOWN
NodeName=$B NodeAddr=$NETNS_ADDR_b CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 State=UNKNOWN
PartitionName=debug Nodes=$A,$B Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$CONF"
# on NODE CMD...: CMD in node NODE's network namespace, with its hostname and its own TmpFS (a
# bind mount in a private mount namespace). nsenter, not `ip netns exec`: that remounts /sys,
# hiding /sys/fs/cgroup, and slurmd fails without it.
on() {
  # shellcheck disable=SC2016 # expanded by that sh
  nsenter --net="/run/netns/$(netns_ns "$1")" unshare --uts --mount /bin/sh -c \
    'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"' \
    "$(netns_ns "$1")" "$TMP/tmp-$1" "$TMP/tmpfs" "${@:2}"
}
logs() { tail -n 30 "$TMP"/log/*.log "$TMP/munge/munged.log"; }
on a slurmctld -c -f "$CONF" || { echo "FAIL: slurmctld did not start"; logs; exit 1; }
on a slurmd -f "$CONF" -N "$A" || { echo "FAIL: slurmd on node a did not start"; logs; exit 1; }
on b slurmd -f "$CONF" -N "$B" || { echo "FAIL: slurmd on node b did not start"; logs; exit 1; }
idle=0
for _ in $(seq 300); do
  [ "$(on a sinfo -h -N -o '%T' 2> /dev/null | grep -cx 'idle')" -eq 2 ] && { idle=1; break; }
  sleep 0.2
done
if [ $idle -ne 1 ]; then
  echo "FAIL: the two nodes are not idle after 60 s:"
  on a sinfo -N
  logs
  exit 1
fi
echo "two-node Slurm up in $(since "$t0") s: $A ($NETNS_ADDR_a: slurmctld, slurmd), $B ($NETNS_ADDR_b: slurmd)"
on a sinfo -N | sed 's/^/  /'

# Every rank starts through this probe: rank, network namespace, hostname; then hfrun (same pid).
cat > "$TMP/hfrun-probe" << PROBE
#!/bin/sh
[ "\$1" = train ] && echo "\$SLURM_PROCID \$(readlink /proc/self/ns/net) \$(hostname)" >> "$TMP/ranks"
exec "$HFRUN" "\$@"
PROBE
chmod +x "$TMP/hfrun-probe"
: > "$TMP/ranks"

cfg mn
t0=$(now)
job=$(HFRUN="$TMP/hfrun-probe" on a sbatch --parsable --chdir="$TMP" -o "$TMP/mn.out" \
  --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 "$SRC/cluster/slurm/train-multinode.sbatch" \
  "$TMP/mn.yaml")
[ -n "$job" ] || { echo "FAIL: sbatch"; exit 1; }
wait_for "$TMP/mn/metrics.jsonl" '"step": 1,' 60 && echo "sbatch to the first step: $(since "$t0") s"
state=""
for _ in $(seq 1200); do
  state=$(on a scontrol show job "$job" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | "") break ;; esac
  sleep 0.1
done
echo "sbatch to the end of the job: $(since "$t0") s ($state)"
exitcode=$(on a scontrol show job "$job" | grep -o 'ExitCode=[0-9:]*' | head -n1)
if [ "$state" != COMPLETED ] || [ "$exitcode" != "ExitCode=0:0" ] || [ ! -f "$TMP/mn/final/model.safetensors" ]; then
  echo "FAIL: job $job: state ${state:-gone}, $exitcode"
  cat "$TMP/mn.out"
  logs
  fail=1
fi
grep -q "data parallel: 4 ranks" "$TMP/mn.out" || { echo "FAIL: the job did not run 4 ranks"; cat "$TMP/mn.out"; fail=1; }

echo "  ranks (rank netns host):"
sort -n "$TMP/ranks" | sed 's/^/    /'
NET_A="net:[$(stat -L -c %i "/run/netns/$A")]"
NET_B="net:[$(stat -L -c %i "/run/netns/$B")]"
for r in 0 1 2 3; do
  want="$NET_A $A"
  [ $r -ge 2 ] && want="$NET_B $B"
  got=$(awk -v r=$r '$1 == r { print $2, $3 }' "$TMP/ranks")
  [ "$got" = "$want" ] || { echo "FAIL: rank $r ran in '${got:-nowhere}', not '$want'"; fail=1; }
done

if [ "$(losses "$TMP/ref/metrics.jsonl" | wc -l)" -ne 20 ]; then
  echo "FAIL: the mpirun reference did not log 20 losses"; fail=1
elif [ "$(losses "$TMP/ref/metrics.jsonl")" = "$(losses "$TMP/mn/metrics.jsonl")" ]; then
  echo "  losses equal the mpirun run's (exact): $(losses "$TMP/mn/metrics.jsonl" | head -5 | tr '\n' ' ')..."
else
  echo "FAIL: the two-node losses differ from the one-node mpirun losses:"
  paste <(losses "$TMP/ref/metrics.jsonl") <(losses "$TMP/mn/metrics.jsonl") | sed 's/^/    /'
  fail=1
fi

[ $fail -eq 0 ] && echo "ok: sbatch train-multinode.sbatch on a two-node Slurm (2+2 ranks)" || echo "FAILED"
exit $fail
