#!/usr/bin/env bash
# Inside a private network namespace (`unshare -n`): loopback up, and a veth pair with private test
# addresses (10.77.0.1 for servers, 10.77.0.2 its peer), so that WebRTC stacks which ignore loopback
# (libwebrtc, pion) have an interface to use; nothing they send leaves the namespace.
set -euo pipefail
ip link set lo up
ip link add fleet-v0 type veth peer name fleet-v1
ip addr add 10.77.0.1/24 dev fleet-v0
ip addr add 10.77.0.2/24 dev fleet-v1
ip link set fleet-v0 up
ip link set fleet-v1 up
