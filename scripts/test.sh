#!/usr/bin/env bash
# Runs the whole test suite: formatting and vet, then every Go test, which
# start what they need (Azurite, the handler, MCP Inspector's CLI, the
# conformance suite, the Mono gateway) on loopback and stop it again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(repo_root)"

npm_deps
node22 >/dev/null
bash scripts/mono.sh

echo "==> gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
echo "==> go vet"
go vet ./...
echo "==> go test"
# MCP_REQUIRE_AZURITE and MCP_REQUIRE_MONO turn "not installed" from a skip
# into a failure: here everything is installed, so nothing may be skipped.
MCP_REQUIRE_AZURITE=1 MCP_REQUIRE_MONO=1 go test -count=1 -timeout 20m "$@" ./...
