# shellcheck shell=bash
# netns_nodes.sh: two "nodes" on one machine for multi-node tests of mpirun jobs (bash, source it).
#
# Node a and node b are network namespaces ${PREFIX}a and ${PREFIX}b joined by a veth pair
# (veth0 in each, 10.N.0.1/24 in a, 10.N.0.2/24 in b; the addresses exist only inside the
# namespaces), each with its own hostname (a UTS namespace per command, named like the namespace)
# and both on this machine's filesystem. mpirun reaches node b the way it reaches a real node:
# through its rsh agent (OMPI_MCA_plm_rsh_agent), here a script that runs the orted command with
# `ip netns exec` instead of ssh. mpirun itself must run in node a (netns_run a ...): there
# 10.N.0.1 is a local address, so mpirun starts node a's ranks itself, and node b's orted can
# connect back to it (the namespaces reach nothing but each other).
#
#   source tests/cluster/netns_nodes.sh
#   netns_check_prereqs || exit 77          # prints "SKIP: <why>" when namespaces are not allowed
#   netns_up "hfn$$-"                        # namespaces, veth, agent, hostfile, OMPI_MCA_* exports
#   netns_run a hfrun -np 4 --hostfile "$NETNS_HOSTFILE" cfg.yaml
#   netns_down                               # kills every process in the nodes, deletes them
#
# After netns_up: NETNS_PREFIX, NETNS_DIR (agent, hostfile, host map), NETNS_HOSTFILE
# ("10.N.0.1 slots=2" and "10.N.0.2 slots=2"), NETNS_SUBNET (10.N.0.0/24), NETNS_ADDR_a,
# NETNS_ADDR_b, and these exports (plm_rsh_pass_environ_mca_params, on by default, also hands
# them to the remote orted on its command line):
#   OMPI_MCA_plm_rsh_agent      the netns agent instead of ssh (the whole point)
#   OMPI_MCA_oob_tcp_if_include  the veth subnet: mpirun/orted control traffic on the "cluster"
#                                network, as on a real multi-homed node
#   OMPI_MCA_btl_tcp_if_include  the veth subnet: rank-to-rank traffic between nodes
#   OMPI_MCA_btl=self,vader,tcp  shared memory inside a node, TCP between nodes; no openib/ofi
#   OMPI_MCA_pml=ob1             the BTL path above, never UCX (which would bring its own TCP
#                                transport and interface choice where UCX finds usable devices)
# Only the agent is strictly needed here (each namespace holds just lo and veth0, and TCP skips
# lo by default); the other four pin what a machine with more interfaces or InfiniBand/UCX
# would otherwise choose. The remote orted runs as root without OMPI_ALLOW_RUN_AS_ROOT (only
# mpirun checks, and hfrun passes --allow-run-as-root).
# Also: netns_map_host (more hosts for the agent, failing ones included), netns_pids NODE,
# netns_link NODE up|down, netns_sysctl NAME=VALUE (both nodes), netns_ns NODE.

# netns_check_prereqs: 0 when this machine can run the nodes, else prints "SKIP: <why>", returns 1.
netns_check_prereqs() {
  local c
  for c in ip unshare hostname "${MPIEXEC:-mpirun}"; do
    if ! command -v "$c" > /dev/null 2>&1; then
      echo "SKIP: '$c' is not on PATH (needs iproute2, util-linux and Open MPI)"
      return 1
    fi
  done
  # The MCA names used here (plm_rsh_agent, orte_fork_agent, oob_tcp_*) are Open MPI 4's ORTE;
  # Open MPI 5 launches through PRRTE with other names.
  local version
  version=$("${MPIEXEC:-mpirun}" --version 2>&1 | head -1)
  if ! [[ "$version" =~ (Open\ MPI|OpenRTE)\)?\ 4\. ]]; then
    echo "SKIP: needs Open MPI 4.x's mpirun (ORTE), found: ${version:-nothing}"
    return 1
  fi
  local probe="hfprobe$$x" err
  if ! err=$(ip netns add "${probe}a" 2>&1); then
    echo "SKIP: cannot create a network namespace (ip netns add: ${err:-failed}); needs root" \
      "(CAP_SYS_ADMIN and CAP_NET_ADMIN), e.g. a privileged container"
    return 1
  fi
  local why=""
  if ! err=$(ip netns add "${probe}b" 2>&1); then
    why="cannot create a second network namespace (ip netns add: $err)"
  elif ! err=$(ip link add veth0 netns "${probe}a" type veth peer name veth0 netns "${probe}b" 2>&1); then
    why="cannot create a veth pair between namespaces (ip link add ... type veth: $err)"
  elif ! err=$(ip netns exec "${probe}a" unshare --uts /bin/sh -c 'hostname hfprobe-a' 2>&1); then
    why="cannot run a command with its own hostname in a namespace (ip netns exec + unshare --uts: $err)"
  fi
  ip netns del "${probe}a" 2> /dev/null
  ip netns del "${probe}b" 2> /dev/null
  if [ -n "$why" ]; then
    echo "SKIP: $why"
    return 1
  fi
  return 0
}

# The hostname commands get in namespace NS (letters, digits and '-').
_netns_hostname() { printf '%s' "${1//[^A-Za-z0-9-]/-}"; }

# netns_up PREFIX: creates the two nodes and exports the settings above. PREFIX must be unique to
# this run (e.g. "hfn$$-"); letters, digits and '-' (it also names the nodes' hosts).
netns_up() {
  local p="${1:?usage: netns_up PREFIX}"
  if ! [[ "$p" =~ ^[A-Za-z0-9-]{1,40}$ ]]; then
    echo "netns_up: PREFIX '$p' must be 1-40 letters, digits or '-'" >&2
    return 1
  fi
  local node
  for node in a b; do
    if ip netns list | awk '{print $1}' | grep -qx "$p$node"; then
      echo "netns_up: namespace $p$node exists already (another run, or a left-over: netns_down $p)" >&2
      return 1
    fi
  done
  NETNS_PREFIX="$p"
  # The subnet only has to differ from nothing (the namespaces see only each other); derived from
  # the prefix so that logs of parallel runs are told apart.
  local n=$(($(printf '%s' "$p" | cksum | cut -d' ' -f1) % 200 + 20))
  NETNS_SUBNET="10.$n.0.0/24"
  NETNS_ADDR_a="10.$n.0.1"
  NETNS_ADDR_b="10.$n.0.2"
  NETNS_DIR="$(mktemp -d "/tmp/${p}XXXXXX")" || return 1
  NETNS_HOSTFILE="$NETNS_DIR/hostfile"

  # The veth ends are created directly inside the namespaces: no name in the root namespace, so
  # parallel runs cannot collide, and deleting either namespace deletes the pair.
  if ! { ip netns add "${p}a" && ip netns add "${p}b" &&
    ip link add veth0 netns "${p}a" type veth peer name veth0 netns "${p}b" &&
    ip -n "${p}a" addr add "$NETNS_ADDR_a/24" dev veth0 &&
    ip -n "${p}b" addr add "$NETNS_ADDR_b/24" dev veth0 &&
    ip -n "${p}a" link set lo up && ip -n "${p}b" link set lo up &&
    ip -n "${p}a" link set veth0 up && ip -n "${p}b" link set veth0 up; }; then
    echo "netns_up: could not set up the namespaces" >&2
    netns_down "$p"
    return 1
  fi

  # Host -> namespace, read by the agent on every call (netns_map_host adds lines).
  printf '%s %s\n%s %s\n%s %s\n%s %s\n' "$NETNS_ADDR_a" "${p}a" "$NETNS_ADDR_b" "${p}b" \
    "${p}a" "${p}a" "${p}b" "${p}b" > "$NETNS_DIR/hosts.map"
  printf '%s slots=2\n%s slots=2\n' "$NETNS_ADDR_a" "$NETNS_ADDR_b" > "$NETNS_HOSTFILE"

  # The rsh agent: mpirun runs `AGENT HOST ORTED-COMMAND...` as it would run `ssh HOST ...`. Like
  # the ssh client it stays the parent of the remote command (mpirun watches it), passes on its
  # exit status, hangs up on the remote command when it is itself signalled, and fails like ssh
  # for a host that is not there (exit 255). The environment passes through unchanged (mpirun's,
  # OMPI_MCA_* and OMP_NUM_THREADS included), where ssh would give a login environment.
  # hosts.map lines: HOST NAMESPACE [DELAY_S]; NAMESPACE "!unreachable" fails at once (ssh: No
  # route to host), "!hang" blocks for $NETNS_HANG_S (default 130 s, Linux's TCP connect timeout)
  # and then fails (ssh: Connection timed out); DELAY_S delays the start (a slow ssh login).
  cat > "$NETNS_DIR/agent" << 'AGENT'
#!/bin/bash
dir="$(dirname "$0")"
host="$1"
shift
[ -n "${NETNS_AGENT_LOG:-}" ] && echo "$(date +%T.%N) agent: $host: $*" >> "$NETNS_AGENT_LOG"
read -r ns delay < <(awk -v h="$host" '$1 == h { print $2, $3; exit }' "$dir/hosts.map")
# Until the remote command runs, a signal (mpirun giving up) ends the agent at once, as it would
# end an ssh client; sleeps run in the background so that the trap is not deferred.
pause() {
  sleep "$1" &
  waiting=$!
  wait $waiting
}
trap 'kill $waiting 2> /dev/null; exit 255' TERM HUP INT
case "${ns:-!unreachable}" in
  '!unreachable')
    echo "ssh: connect to host $host port 22: No route to host" >&2
    exit 255 ;;
  '!hang')
    pause "${NETNS_HANG_S:-130}"
    echo "ssh: connect to host $host port 22: Connection timed out" >&2
    exit 255 ;;
esac
[ -n "$delay" ] && pause "$delay"
name="${ns//[^A-Za-z0-9-]/-}"
ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$1"' "$name" "$*" &
child=$!
trap 'kill -HUP $child 2> /dev/null' TERM HUP INT
while :; do
  { wait $child; } 2> /dev/null # no "Killed" notice from bash: the line below says it
  rc=$?
  kill -0 $child 2> /dev/null || break
done
[ $rc -eq 0 ] || echo "netns agent: the command on $host ($ns) ended with status $rc" >&2
exit $rc
AGENT
  chmod +x "$NETNS_DIR/agent"

  export OMPI_MCA_plm_rsh_agent="$NETNS_DIR/agent"
  export OMPI_MCA_oob_tcp_if_include="$NETNS_SUBNET"
  export OMPI_MCA_btl_tcp_if_include="$NETNS_SUBNET"
  export OMPI_MCA_btl="self,vader,tcp"
  export OMPI_MCA_pml="ob1"
  return 0
}

# netns_map_host HOST NS [DELAY_S]: the agent sends HOST to namespace NS, which need not exist
# (ip netns exec fails), or fails like ssh: NS "!unreachable" at once, "!hang" after $NETNS_HANG_S.
netns_map_host() {
  echo "$1 $2 ${3:-}" >> "$NETNS_DIR/hosts.map"
}

# netns_ns NODE: the namespace of node NODE (a or b).
netns_ns() { printf '%s' "${NETNS_PREFIX}$1"; }

# netns_run NODE CMD...: runs CMD in node NODE's namespace with the node's hostname. Start mpirun
# (hfrun -np N --hostfile ...) with `netns_run a`.
netns_run() {
  local ns="${NETNS_PREFIX:?netns_up first}$1"
  shift
  # shellcheck disable=SC2016 # expanded by that sh
  ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' \
    "$(_netns_hostname "$ns")" "$@"
}

# netns_pids NODE: the pids of every process in node NODE's network namespace.
netns_pids() { ip netns pids "${NETNS_PREFIX}$1" 2> /dev/null; }

# netns_link NODE up|down: node NODE's end of the veth pair up or down (a cut network link).
netns_link() { ip -n "${NETNS_PREFIX}$1" link set veth0 "$2"; }

# netns_sysctl NAME=VALUE: sets a network sysctl in both nodes (they are per namespace), e.g.
# net.ipv4.tcp_retries2=5: TCP gives up on an unanswered peer after ~15 s instead of ~15 min.
netns_sysctl() {
  ip netns exec "${NETNS_PREFIX}a" sysctl -qw "$1" && ip netns exec "${NETNS_PREFIX}b" sysctl -qw "$1"
}

# netns_down [PREFIX]: kills every process in the nodes (namespaces ${PREFIX}a, ${PREFIX}b and any
# other ${PREFIX}<letter>), deletes them (and so the veth pair) and the agent directory. Safe to
# call more than once and after a partial netns_up.
netns_down() {
  local p="${1:-${NETNS_PREFIX:-}}"
  [ -n "$p" ] || return 0
  local ns pids
  for ns in $(ip netns list 2> /dev/null | awk '{print $1}' | grep -E "^${p}[a-z]$"); do
    for _ in $(seq 50); do
      pids=$(ip netns pids "$ns" 2> /dev/null)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086 # one pid per word
      kill -9 $pids 2> /dev/null
      sleep 0.1
    done
    [ -z "$pids" ] || echo "netns_down: processes survive in $ns: $pids" >&2
    ip netns del "$ns" 2> /dev/null
    # Open MPI's session directory is named after the host, here the node's own name.
    rm -rf "${TMPDIR:-/tmp}/ompi.$(_netns_hostname "$ns")".* /tmp/ompi."$(_netns_hostname "$ns")".*
  done
  if [ "$p" = "${NETNS_PREFIX:-}" ] && [ -n "${NETNS_DIR:-}" ]; then
    rm -rf "$NETNS_DIR"
    NETNS_DIR=""
  fi
  return 0
}
