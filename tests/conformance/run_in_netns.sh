#!/usr/bin/env bash
# Runs devroom and LiveKit's official Python SDK inside a private network namespace (start it with
# `unshare -n`). libwebrtc ignores loopback when gathering candidates, so media flows over a veth pair
# with private test addresses; nothing leaves the namespace.
# usage: run_in_netns.sh DEVROOM_BIN PYTHON SCENARIO CLIP_CACHE ROOM EXPECT_TRACKS SECONDS
set -euo pipefail
devroom=$1 python=$2 scenario=$3 clips=$4 room=$5 expect=$6 seconds=$7
here=$(cd "$(dirname "$0")" && pwd)
key=conformance-key secret=conformance-secret-0123456789abcdef port=17880

"$here/../../deploy/netns-veth.sh"

"$devroom" --listen 127.0.0.1:$port --rtc-ip 10.77.0.1 --scenario "$scenario" --clip-cache "$clips" \
  --api-key $key --api-secret $secret >&2 &
devroom_pid=$!
trap 'kill $devroom_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 900); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done

timeout 120 "$python" "$here/sdk_client.py" --url ws://127.0.0.1:$port --room "$room" \
  --api-key $key --api-secret $secret --expect-tracks "$expect" --seconds "$seconds"
