#!/usr/bin/env bash
# Start three kommander-server processes on loopback (REST transport by default, or `grpc`),
# write a few keys through node 1, read them back from every node, then stop the nodes with SIGTERM.
#
#   examples/three-servers.sh [rest|grpc] [DATA_DIR]
#
# Leaves the nodes' logs in DATA_DIR/n*.log (default: a fresh temporary directory).
set -euo pipefail
transport="${1:-rest}"
data="${2:-$(mktemp -d)}"
secret="three-servers-demo-secret"
cd "$(dirname "$0")/.."
cargo build --quiet -p kommander-server
bin="target/debug/kommander-server"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
for id in 1 2 3; do
  args=(--node-id "$id" --listen "127.0.0.1:700$id" --grpc-listen "127.0.0.1:710$id"
        --transport "$transport" --dir "$data/n$id" --secret "$secret" --partitions 4)
  for peer in 1 2 3; do
    [[ "$peer" == "$id" ]] && continue
    args+=(--peer "$peer=http://127.0.0.1:700$peer" --peer-grpc "$peer=http://127.0.0.1:710$peer")
  done
  "$bin" "${args[@]}" 2>"$data/n$id.log" &
  pids+=("$!")
done
echo "3 nodes starting ($transport transport, data in $data); waiting for leaders..."
for _ in $(seq 1 100); do
  if curl -sf http://127.0.0.1:7001/status | grep -q '"is_leader":true' 2>/dev/null ||
     curl -sf http://127.0.0.1:7002/status | grep -q '"is_leader":true' 2>/dev/null; then break; fi
  sleep 0.2
done
sleep 1
for i in $(seq 1 10); do
  curl -sf -X PUT --data "value-$i" "http://127.0.0.1:7001/kv/key-$i" >/dev/null && echo "put key-$i = value-$i"
done
sleep 0.5
for id in 1 2 3; do
  echo "node $id: key-7 = $(curl -sf http://127.0.0.1:700$id/kv/key-7)"
done
curl -sf http://127.0.0.1:7001/status; echo
echo "stopping the nodes (SIGTERM)"
