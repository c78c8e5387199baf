#!/usr/bin/env bash
# Runs the system on this machine with no Azure account: Azurite for Blob and
# Queue storage, then the handler, with authentication off (local user).
# Ctrl-C stops everything this script started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

PORT=${PORT:-7071}
state="$root/.run"
mkdir -p "$state/azurite" "$root/bin"

npm_deps
node=$(node22)

pids=()
cleanup() {
  trap - INT TERM EXIT
  # Ctrl-C reached the whole process group already; ask again politely,
  # then insist: Azurite sometimes hangs while closing.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  echo "stopped"
}
trap cleanup INT TERM EXIT

for p in 10000 10001; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use: is another Azurite running? Stop it or free the port." >&2; exit 1
  fi
done
echo "==> Azurite (data in .run/azurite)"
"$node" node_modules/azurite/dist/src/azurite.js --silent --skipApiVersionCheck --loose \
  --blobHost 127.0.0.1 --blobPort 10000 --queueHost 127.0.0.1 --queuePort 10001 \
  --tableHost 127.0.0.1 --tablePort 10002 --location "$state/azurite" \
  >"$state/azurite.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 10000 30
wait_port 127.0.0.1 10001 30

echo "==> building the handler"
go build -o bin/handler ./handler

echo "==> handler on 127.0.0.1:$PORT"
FUNCTIONS_CUSTOMHANDLER_PORT=$PORT \
AzureWebJobsStorage=UseDevelopmentStorage=true \
MCP_AUTH=off \
MCP_RESOURCE_URL="http://localhost:$PORT/mcp" \
  bin/handler &
pids+=($!)
wait_port 127.0.0.1 "$PORT" 30

cat <<MSG

  MCP server running with authentication OFF (local development).
    Streamable HTTP: http://localhost:$PORT/mcp
    SSE:             http://localhost:$PORT/mcp/sse
  Inspector:  $node node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
              then connect to http://localhost:$PORT/mcp (transport: Streamable HTTP)
  Ctrl-C stops Azurite and the handler.

MSG
wait -n "${pids[@]}"
