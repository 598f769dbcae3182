#!/usr/bin/env bash
# Run a command inside a fresh network namespace: loopback plus a veth pair (10.99.0.1/24 <-> 10.99.0.2/24)
# that reaches nothing outside. The namespace is removed when the command ends, however it ends.
# Outside root (a developer laptop) the command runs as is, on loopback only.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
  echo "netns.sh: not root or no iproute2; running without a network namespace" >&2
  exec "$@"
fi
ns="pinstream-test-$$"
cleanup() { ip netns delete "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip link add veth-a type veth peer name veth-b
ip netns exec "$ns" ip addr add 10.99.0.1/24 dev veth-a
ip netns exec "$ns" ip addr add 10.99.0.2/24 dev veth-b
ip netns exec "$ns" ip link set veth-a up
ip netns exec "$ns" ip link set veth-b up
export PINSTREAM_TEST_NETNS="$ns" PINSTREAM_TEST_ADDRESSES="10.99.0.1,10.99.0.2"
set +e
ip netns exec "$ns" "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
exit "$status"
