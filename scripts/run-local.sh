#!/usr/bin/env bash
# Runs the whole system on this machine with no Azure account (DESIGN section 7):
# Azurite for Blob and Queue storage, the handler with authentication on, the
# Entra ID stand-in (scripts/entra-standin.mjs) and the local API Management
# gateway executing apim-policies/ (Mono). MCP clients connect to the gateway:
# http://localhost:8000/mcp.
#
# AUTH=off (`make run AUTH=off`) or MCP_AUTH=off runs the handler alone with
# authentication off (one local user), as does a machine where Mono is missing
# and cannot be installed (not Debian/Ubuntu).
#
# Ports: GATEWAY_PORT (8000), PORT (7071, the handler), ENTRA_PORT (8400),
# AZURITE_BLOB_PORT, AZURITE_QUEUE_PORT, AZURITE_TABLE_PORT (10000-10002).
# State: RUN_DIR (.run). Keys are created once in $RUN_DIR/keys.json and
# kept; logs go to $RUN_DIR/*.log (the handler's to this terminal). Ctrl-C
# (or SIGTERM) stops everything this script started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

PORT=${PORT:-7071}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
ENTRA_PORT=${ENTRA_PORT:-8400}
AZURITE_BLOB_PORT=${AZURITE_BLOB_PORT:-10000}
AZURITE_QUEUE_PORT=${AZURITE_QUEUE_PORT:-10001}
AZURITE_TABLE_PORT=${AZURITE_TABLE_PORT:-10002}
MANIFEST=${MANIFEST:-apim-policies/apis.json}
state=${RUN_DIR:-"$root/.run"}
# The development account's well-known key (Azurite's, public), on our ports.
storage="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$AZURITE_BLOB_PORT/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$AZURITE_QUEUE_PORT/devstoreaccount1;"
mkdir -p "$state/azurite" "$root/bin"

# Fixed local identities (the same as handler/testenv/system.go): the Entra app's
# client id, the gateway's managed identity, and the subject of the assertions
# the local gateway mints (apim-policies/gateway/src/Policies/ManagedIdentity.cs).
ENTRA_CLIENT_ID=5f0c3a8e-2b7d-4c1e-9a64-3d8e2f1b7c90
MI_CLIENT_ID=3c9a7d52-8e14-4b6f-a0d3-7f25e9c1b846
MI_PRINCIPAL_ID=6d1a0f0e-5c4b-4f3e-9a2d-0c1b2a3f4e5d
LOCAL_TENANT_ID=00000000-0000-0000-0000-000000000000

npm_deps
node=$(node22)

auth=on
why="AUTH=off"
if [ "${AUTH:-on}" = off ] || [ "${MCP_AUTH:-}" = off ]; then
  auth=off
elif ! bash scripts/mono.sh; then
  auth=off
  why="Mono is missing: no gateway"
  cat >&2 <<'MSG'

  Mono is missing and could not be installed here, so the local API Management gateway
  cannot run. Starting the handler ALONE, with authentication OFF (one local user, no
  sign-in). Install Mono (macOS: brew install mono; Windows: use WSL; Debian/Ubuntu:
  bash scripts/mono.sh) and run `make run` again for the whole system.

MSG
fi

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
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped"
}
trap cleanup INT TERM EXIT

need_free() { # need_free PORT WHAT
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is in use: is another $2 running? Stop it or free the port." >&2; exit 1
  fi
}
for p in "$AZURITE_BLOB_PORT" "$AZURITE_QUEUE_PORT" "$AZURITE_TABLE_PORT"; do need_free "$p" Azurite; done
need_free "$PORT" "handler (make run)"
if [ "$auth" = on ]; then
  need_free "$GATEWAY_PORT" "gateway (make run)"
  need_free "$ENTRA_PORT" "Entra stand-in (make run)"
fi

echo "==> building the handler"
go build -o bin/handler ./handler

if [ "$auth" = on ]; then
  [ -f "$MANIFEST" ] || { echo "$MANIFEST is missing: the gateway has no policies to run (make run AUTH=off runs without it)" >&2; exit 1; }
  echo "==> building the local API Management gateway"
  # Only failures are worth showing (mcs prints its warnings on every build).
  if ! out=$(bash apim-policies/gateway/build.sh 2>&1); then echo "$out" >&2; exit 1; fi
  echo "==> keys ($state/keys.json: created once, then kept)"
  go run ./scripts/keygen -file "$state/keys.json"
  gateway_url="http://localhost:$GATEWAY_PORT"
  entra_url="http://127.0.0.1:$ENTRA_PORT"
  # The gateway's named values (the names Bicep fills in Azure), readable by
  # the owner only: they hold the keys.
  STATE=$state GATEWAY_URL=$gateway_url ENTRA_URL=$entra_url FUNCTION_APP_URL="http://127.0.0.1:$PORT" \
  ENTRA_CLIENT_ID=$ENTRA_CLIENT_ID MI_CLIENT_ID=$MI_CLIENT_ID ALLOWED_TENANTS=${ALLOWED_TENANTS:-$LOCAL_TENANT_ID} \
  "$node" --input-type=module -e '
    import { readFileSync, writeFileSync, renameSync } from "node:fs";
    import { randomBytes } from "node:crypto";
    const e = process.env, keys = JSON.parse(readFileSync(`${e.STATE}/keys.json`, "utf8"));
    const nv = {
      ...keys,
      GatewayUrl: e.GATEWAY_URL,
      FunctionAppUrl: e.FUNCTION_APP_URL,
      FunctionKey: randomBytes(24).toString("base64url"),
      EntraAuthorizeUrl: `${e.ENTRA_URL}/organizations/oauth2/v2.0/authorize`,
      EntraTokenUrl: `${e.ENTRA_URL}/organizations/oauth2/v2.0/token`,
      EntraClientId: e.ENTRA_CLIENT_ID,
      EntraIssuerPrefix: `${e.ENTRA_URL}/`,
      EntraAllowedTenants: e.ALLOWED_TENANTS,
      ManagedIdentityClientId: e.MI_CLIENT_ID,
    };
    writeFileSync(`${e.STATE}/named-values.json.tmp`, JSON.stringify(nv, null, 2) + "\n", { mode: 0o600 });
    renameSync(`${e.STATE}/named-values.json.tmp`, `${e.STATE}/named-values.json`);'
  key() { "$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[2],"utf8"))[process.argv[1]])' "$1" "$state/keys.json"; }
fi

echo "==> Azurite (data in $state/azurite)"
"$node" node_modules/azurite/dist/src/azurite.js --silent --skipApiVersionCheck --loose \
  --blobHost 127.0.0.1 --blobPort "$AZURITE_BLOB_PORT" --queueHost 127.0.0.1 --queuePort "$AZURITE_QUEUE_PORT" \
  --tableHost 127.0.0.1 --tablePort "$AZURITE_TABLE_PORT" --location "$state/azurite" \
  >"$state/azurite.log" 2>&1 &
pids+=($!)

if [ "$auth" = on ]; then
  echo "==> Entra ID stand-in on 127.0.0.1:$ENTRA_PORT (log $state/entra-standin.log)"
  "$node" scripts/entra-standin.mjs --port "$ENTRA_PORT" --host 127.0.0.1 \
    --client-id "$ENTRA_CLIENT_ID" --tenant-issuer-prefix "$entra_url/" \
    --redirect-uri "$gateway_url/oauth-callback" \
    --assertion-jwks "$gateway_url/.local-gateway/managed-identity/jwks.json" \
    --assertion-subject "$MI_PRINCIPAL_ID" \
    >"$state/entra-standin.log" 2>&1 &
  pids+=($!)
  echo "==> API Management gateway on 127.0.0.1:$GATEWAY_PORT (log $state/gateway.log)"
  mono --debug apim-policies/gateway/bin/gateway.exe serve --manifest "$MANIFEST" \
    --named-values "$state/named-values.json" --port "$GATEWAY_PORT" --host 127.0.0.1 \
    >"$state/gateway.log" 2>&1 &
  pids+=($!)
fi

wait_port 127.0.0.1 "$AZURITE_BLOB_PORT" 30
wait_port 127.0.0.1 "$AZURITE_QUEUE_PORT" 30

echo "==> handler on 127.0.0.1:$PORT"
if [ "$auth" = on ]; then
  FUNCTIONS_CUSTOMHANDLER_PORT=$PORT \
  MCP_LISTEN_HOST=127.0.0.1 \
  AzureWebJobsStorage="$storage" \
  MCP_TOKEN_ISSUER=$gateway_url \
  MCP_RESOURCE_URL="$gateway_url/mcp" \
  MCP_TOKEN_JWKS=$(key TokenJwks) \
  MCP_INTERNAL_KEY=$(key InternalKey) \
    bin/handler &
else
  FUNCTIONS_CUSTOMHANDLER_PORT=$PORT \
  AzureWebJobsStorage="$storage" \
  MCP_AUTH=off \
  MCP_RESOURCE_URL="http://localhost:$PORT/mcp" \
    bin/handler &
fi
pids+=($!)
wait_port 127.0.0.1 "$PORT" 30

if [ "$auth" = off ]; then
  cat <<MSG

  MCP server running with authentication OFF (local development; $why).
    Streamable HTTP: http://localhost:$PORT/mcp
    SSE:             http://localhost:$PORT/mcp/sse
  Inspector:  $node node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
              then connect to http://localhost:$PORT/mcp (transport: Streamable HTTP)
  Ctrl-C stops Azurite and the handler.

MSG
else
  wait_port 127.0.0.1 "$ENTRA_PORT" 30
  if ! wait_port 127.0.0.1 "$GATEWAY_PORT" 90; then
    tail -n 20 "$state/gateway.log" >&2; exit 1
  fi
  if grep -q '^problem: ' "$state/gateway.log"; then
    echo "warning: the policy bundle has problems (requests that touch them answer 500):" >&2
    grep '^problem: ' "$state/gateway.log" >&2
  fi
  cat <<MSG

  MCP server running behind the local API Management gateway: sign-in required (OAuth 2.1).
    Give your MCP client this URL:  $gateway_url/mcp
    (legacy SSE transport:          $gateway_url/mcp/sse)
  Signing in goes through the local Entra ID stand-in ($entra_url), which signs you in at
  once, without a password, as "Local developer" (tenant $LOCAL_TENANT_ID).
  Inspector:  $node node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
              then connect to $gateway_url/mcp (transport: Streamable HTTP)
  Logs: $state/gateway.log, $state/entra-standin.log, $state/azurite.log; the handler's below.
  Ctrl-C stops everything.

MSG
fi
wait -n "${pids[@]}"
