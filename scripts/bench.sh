#!/usr/bin/env bash
# Benchmark report: tools/call over Streamable HTTP on loopback beside a bare
# net/http JSON-RPC handler from the same run, and start-up time.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(repo_root)"
npm_deps
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test ./e2e -run '^$' -bench 'BenchmarkToolsCall|BenchmarkStartup' -benchtime "${BENCHTIME:-2s}" -count 1 | tee "$out"
awk '
  /baseline=bare-net-http/ { base = $3 }
  /BenchmarkToolsCall\/tool=/ { name[$1] = $3 }
  END {
    if (base == "") exit
    print ""
    printf "%-45s %12s %10s\n", "tools/call vs bare net/http (same run)", "ns/op", "ratio"
    for (n in name) printf "%-45s %12d %9.1fx\n", n, name[n], name[n] / base
  }' "$out"
