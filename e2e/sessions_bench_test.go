package e2e

import (
	"bufio"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleSessions is how many idle SSE sessions BenchmarkIdleSSESessions
// opens against one handler process per iteration.
const idleSessions = 200

// vmRSS returns a process's resident set size in KiB from
// /proc/<pid>/status.
func vmRSS(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return n
				}
			}
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// BenchmarkIdleSSESessions opens idleSessions idle SSE streams against one
// handler process and reports its resident memory per session (VmRSS after
// minus before, over the count), for a single instance on its own
// (single-instance) and for one of three instances sharing a Queue
// backplane (scale-out), in the same run. Numbers are reported, not
// asserted; run with -benchtime=1x.
func BenchmarkIdleSSESessions(b *testing.B) {
	measure := func(b *testing.B, h *proc, token string) {
		pid := h.cmd.Process.Pid
		// Warm up: one session opened and closed, so first-use allocations
		// are not counted per session.
		_, _, closeOne := openSSE(b, h.BaseURL, token)
		closeOne()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
		defer client.CloseIdleConnections()
		var perSession, before, after float64
		for b.Loop() {
			time.Sleep(500 * time.Millisecond)
			before = vmRSS(b, pid)
			closers := make([]func(), 0, idleSessions)
			for range idleSessions {
				req, _ := http.NewRequestWithContext(b.Context(), "GET", h.BaseURL+"/mcp/sse", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Accept", "text/event-stream")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("open stream: %d", resp.StatusCode)
				}
				// Wait for the endpoint event: the session exists.
				rd := bufio.NewReader(resp.Body)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						b.Fatalf("reading endpoint event: %v", err)
					}
					if strings.HasPrefix(line, "data: ") {
						break
					}
				}
				closers = append(closers, func() { resp.Body.Close() })
			}
			time.Sleep(time.Second) // let the sessions settle idle
			after = vmRSS(b, pid)
			perSession = (after - before) / idleSessions
			for _, c := range closers {
				c()
			}
		}
		b.ReportMetric(perSession, "KiB/session")
		b.ReportMetric(before/1024, "RSS-before-MiB")
		b.ReportMetric(after/1024, "RSS-after-MiB")
		b.ReportMetric(idleSessions, "sessions")
	}
	b.Run("single-instance", func(b *testing.B) {
		st := startStack(b, nil)
		tid, oid := newUser()
		measure(b, st.Handler, st.Issuer.Token(b, tid, oid))
	})
	b.Run("scale-out", func(b *testing.B) {
		so := startScaleOut(b, 3)
		tok, _ := so.Token(b)
		measure(b, so.Handlers[0], tok)
	})
}
