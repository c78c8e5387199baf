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

# SSE across instances: POST to answer on the stream when the POST lands on
# the instance holding the stream and on another one (Queue backplane on
# Azurite), the bare backplane round trip busy and quiet, and the memory of
# idle sessions on a single instance and on one of three, all in this run.
sse=$(mktemp)
trap 'rm -f "$out" "$sse"' EXIT
go test ./e2e -run '^$' -bench 'BenchmarkSSEDelivery' -benchtime "${BENCHTIME:-2s}" -count 1 | tee "$sse"
go test ./handler/backplane -run '^$' -bench 'BenchmarkForward' -benchtime 20x -count 1 | tee -a "$sse"
go test ./e2e -run '^$' -bench 'BenchmarkIdleSSESessions' -benchtime 1x -count 1 | tee -a "$sse"
awk '
  function metric(unit,   i) { for (i = 3; i < NF; i++) if ($(i+1) == unit) return $i; return "" }
  /BenchmarkSSEDelivery\/same-instance/  { same = metric("p50-µs"); same99 = metric("p99-µs") }
  /BenchmarkSSEDelivery\/cross-instance/ { cross = metric("p50-µs"); cross99 = metric("p99-µs") }
  /BenchmarkForward\/busy/  { busy = metric("p50-µs") }
  /BenchmarkForward\/quiet/ { quiet = metric("p50-µs"); quiet99 = metric("p99-µs") }
  /BenchmarkIdleSSESessions\/single-instance/ { single = metric("KiB/session") }
  /BenchmarkIdleSSESessions\/scale-out/       { scale = metric("KiB/session") }
  END {
    if (same == "" || cross == "") exit
    print ""
    printf "%-52s %10s %10s %8s\n", "SSE message POST -> answer on the stream", "p50 µs", "p99 µs", "ratio"
    printf "%-52s %10d %10d %7.1fx\n", "same instance (baseline)", same, same99, 1
    printf "%-52s %10d %10d %7.1fx\n", "other instance, through the Queue backplane", cross, cross99, cross / same
    if (busy != "") printf "%-52s %10d %10s %7.1fx\n", "backplane round trip alone, back to back", busy, "", busy / same
    if (quiet != "") printf "%-52s %10d %10d %7.1fx\n", "backplane round trip, owner quiet for > 1 s", quiet, quiet99, quiet / same
    if (single != "" && scale != "") {
      print ""
      printf "%-52s %10s %8s\n", "idle SSE session memory (RSS)", "KiB", "ratio"
      printf "%-52s %10.1f %7.1fx\n", "single instance (baseline)", single, 1
      printf "%-52s %10.1f %7.1fx\n", "one of three instances with the backplane", scale, scale / single
    }
  }' "$sse"
