#!/usr/bin/env bash
# netns-link.sh: a real, shaped network link between two Linux network namespaces, to validate the token-bucket
# shaper (KvFetcher.Store.Shaping) against the kernel's own shaping, all on one machine.
#
#   [ns NAME-srv]  10.77.0.1  NAME-s ==== veth ==== NAME-c  10.77.0.2  [ns NAME-cli]
#                  tbf rate R (+ netem delay D) on the egress of BOTH ends, so both directions are shaped.
#
# Usage (as root; needs `ip` and `tc` from the iproute2 package):
#   tools/netns-link.sh up [--rate 1gbit] [--delay 0ms] [--jitter 0ms] [--loss 0%] [--burst BYTES] [--latency 50ms] [--name kvf]
#   tools/netns-link.sh server [--name kvf] CMD [ARG...]   run CMD in the server namespace (it listens on 10.77.0.1)
#   tools/netns-link.sh client [--name kvf] CMD [ARG...]   run CMD in the client namespace (the server is 10.77.0.1)
#   tools/netns-link.sh run --server 'CMD' --client 'CMD' [--wait-port PORT] [up options]
#                                            up, start the server command in the background, wait until PORT accepts
#                                            connections (when given), run the client command, stop the server, down;
#                                            exits with the client's status
#   tools/netns-link.sh status [--name kvf]   show the namespaces' addresses and queueing disciplines
#   tools/netns-link.sh down [--name kvf]     remove both namespaces (and the veth pair with them)
#
# Rates use tc's bit units: bit, kbit, mbit, gbit (decimal, e.g. 2.5gbit). The tbf burst defaults to what the rate
# needs at a 250 Hz kernel tick (rate / 250), at least 128 KiB (a GSO packet is up to 64 KiB). --delay/--jitter/--loss
# add netem in front of tbf. --name picks the namespace prefix, so several links can coexist.
#
# Example: an 8 MB object over a 1 Gbit/s link with 5 ms one-way delay
#   tools/netns-link.sh run --rate 1gbit --delay 5ms --wait-port 7070 \
#     --server 'dotnet kvfetch.dll serve --data /tmp/kv --allow-anonymous --urls http://10.77.0.1:7070' \
#     --client 'curl -s -o /dev/null -w "%{speed_download}\n" http://10.77.0.1:7070/healthz'
# (--allow-anonymous is refused on a non-loopback address: give the server a --token-file in real runs.)
set -euo pipefail

SERVER_IP=10.77.0.1
CLIENT_IP=10.77.0.2
name=kvf rate=1gbit delay=0ms jitter=0ms loss=0% burst="" latency=50ms
server_cmd="" client_cmd="" wait_port="" server_pid=""

die() {
  echo "netns-link.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

preflight() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and tc need CAP_SYS_ADMIN and CAP_NET_ADMIN); try sudo"
  command -v ip >/dev/null 2>&1 || die "'ip' not found: install iproute2 (apt-get install iproute2)"
  command -v tc >/dev/null 2>&1 || die "'tc' not found: install iproute2 (apt-get install iproute2)"
}

# Bytes per second of a tc bit rate ("2.5gbit" -> 312500000).
rate_bytes() {
  [[ "$1" =~ ^([0-9]+(\.[0-9]+)?)([a-zA-Z]*)$ ]] || die "bad rate '$1' (use e.g. 500mbit, 1gbit)"
  local value=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3],,}
  case "$unit" in
    bit | "") awk -v v="$value" 'BEGIN { printf "%d", v / 8 }' ;;
    kbit) awk -v v="$value" 'BEGIN { printf "%d", v * 1e3 / 8 }' ;;
    mbit) awk -v v="$value" 'BEGIN { printf "%d", v * 1e6 / 8 }' ;;
    gbit) awk -v v="$value" 'BEGIN { printf "%d", v * 1e9 / 8 }' ;;
    *) die "bad rate unit in '$1': use bit, kbit, mbit or gbit (tc's 'bps' means bytes, so it is not accepted here)" ;;
  esac
}

parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) name=$2; shift 2 ;;
      --rate) rate=$2; shift 2 ;;
      --delay) delay=$2; shift 2 ;;
      --jitter) jitter=$2; shift 2 ;;
      --loss) loss=$2; shift 2 ;;
      --burst) burst=$2; shift 2 ;;
      --latency) latency=$2; shift 2 ;;
      --server) server_cmd=$2; shift 2 ;;
      --client) client_cmd=$2; shift 2 ;;
      --wait-port) wait_port=$2; shift 2 ;;
      -h | --help) usage ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
  done
  [[ "$name" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "--name must be 1-8 lowercase letters/digits, starting with a letter (interface names are short)"
}

shape() { # shape NAMESPACE DEVICE
  local ns=$1 dev=$2 parent="root"
  if [ "$delay" != "0ms" ] || [ "$jitter" != "0ms" ] || [ "$loss" != "0%" ]; then
    local netem=(delay "$delay")
    [ "$jitter" != "0ms" ] && netem+=("$jitter")
    [ "$loss" != "0%" ] && netem+=(loss "$loss")
    ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem "${netem[@]}" 2>/dev/null ||
      die "tc cannot add netem here (this kernel lacks sch_netem?): run without --delay, --jitter and --loss"
    parent="parent 1:1"
  fi
  # shellcheck disable=SC2086 # $parent is two words on purpose
  ip netns exec "$ns" tc qdisc add dev "$dev" $parent handle 10: tbf rate "$rate" burst "$burst" latency "$latency" ||
    die "tc cannot add tbf (rate $rate, burst $burst, latency $latency) here (this kernel lacks sch_tbf?)"
}

up() {
  local bytes
  bytes=$(rate_bytes "$rate")
  [ "$bytes" -gt 0 ] || die "the rate '$rate' is zero"
  if [ -z "$burst" ]; then
    burst=$((bytes / 250))
    [ "$burst" -ge 131072 ] || burst=131072
  fi
  ip netns list | grep -qw "$name-srv" && die "namespace $name-srv exists already: run '$0 down --name $name' first"
  ip netns add "$name-srv" 2>/dev/null || die "cannot create a network namespace (is this container allowed to? it needs CAP_SYS_ADMIN)"
  trap 'down >/dev/null 2>&1' EXIT # half-built on any failure: take it down again
  ip netns add "$name-cli"
  ip link add "$name-s" netns "$name-srv" type veth peer name "$name-c" netns "$name-cli"
  ip -n "$name-srv" addr add "$SERVER_IP/24" dev "$name-s"
  ip -n "$name-cli" addr add "$CLIENT_IP/24" dev "$name-c"
  for ns in "$name-srv" "$name-cli"; do ip -n "$ns" link set lo up; done
  ip -n "$name-srv" link set "$name-s" up
  ip -n "$name-cli" link set "$name-c" up
  shape "$name-srv" "$name-s"
  shape "$name-cli" "$name-c"
  trap - EXIT
  echo "netns-link: $name-srv ($SERVER_IP) <-> $name-cli ($CLIENT_IP): rate $rate (burst $burst B, latency $latency), delay $delay, jitter $jitter, loss $loss"
}

down() {
  local removed=0
  for ns in "$name-srv" "$name-cli"; do
    if ip netns list | grep -qw "$ns"; then
      ip netns del "$ns"
      removed=1
    fi
  done
  [ "$removed" -eq 1 ] && echo "netns-link: removed $name-srv and $name-cli" || echo "netns-link: nothing to remove for '$name'"
}

status() {
  for ns in "$name-srv" "$name-cli"; do
    ip netns list | grep -qw "$ns" || die "namespace $ns does not exist (run '$0 up' first)"
    echo "== $ns"
    ip -n "$ns" -brief addr show
    ip netns exec "$ns" tc -s qdisc show
  done
}

in_namespace() { # in_namespace NAMESPACE CMD...
  local ns=$1
  shift
  [ $# -gt 0 ] || die "no command given"
  ip netns list | grep -qw "$ns" || die "namespace $ns does not exist (run '$0 up' first)"
  exec ip netns exec "$ns" "$@"
}

run() {
  [ -n "$server_cmd" ] && [ -n "$client_cmd" ] || die "run needs --server 'CMD' and --client 'CMD'"
  up
  local status=0
  ip netns exec "$name-srv" bash -c "$server_cmd" &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; down' EXIT
  if [ -n "$wait_port" ]; then
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || die "the server command exited before port $wait_port opened"
      ip netns exec "$name-cli" bash -c "exec 3<>/dev/tcp/$SERVER_IP/$wait_port" 2>/dev/null && break
      sleep 0.2
    done
  fi
  ip netns exec "$name-cli" bash -c "$client_cmd" || status=$?
  return "$status"
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  up) parse_options "$@"; preflight; up ;;
  down) parse_options "$@"; preflight; down ;;
  status) parse_options "$@"; preflight; status ;;
  server | client)
    if [ "${1:-}" = "--name" ]; then
      name=$2
      shift 2
    fi
    preflight
    [ "$command" = server ] && in_namespace "$name-srv" "$@"
    in_namespace "$name-cli" "$@"
    ;;
  run) parse_options "$@"; preflight; run ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$command' (up, down, status, server, client, run; see --help)" ;;
esac
