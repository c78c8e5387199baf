package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkToolsCall measures tools/call over Streamable HTTP on loopback
// against the real handler binary (token validated on every call), beside a
// bare net/http JSON-RPC handler measured in the same run: the ratio of the
// two is the cost of MCP, auth and the tool itself.
func BenchmarkToolsCall(b *testing.B) {
	st := startStack(b, nil)
	tid, oid := newUser()
	tok := st.Issuer.Token(b, tid, oid)

	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"hello"}]}}`, req.ID)
	}))
	defer bare.Close()

	save := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"save_snippet","arguments":{"name":"bench","content":"benchmark content"}}}`
	if resp, body := do(b, "POST", st.Handler.BaseURL+"/mcp", tok, save, nil); resp.StatusCode != 200 {
		b.Fatalf("seeding: %d %s", resp.StatusCode, body)
	}
	hello := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{}}}`
	get := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_snippet","arguments":{"name":"bench"}}}`

	b.Run("baseline=bare-net-http", func(b *testing.B) { benchPost(b, bare.URL, "", hello) })
	b.Run("tool=hello", func(b *testing.B) { benchPost(b, st.Handler.BaseURL+"/mcp", tok, hello) })
	b.Run("tool=get_snippet", func(b *testing.B) { benchPost(b, st.Handler.BaseURL+"/mcp", tok, get) })
}

// benchPost posts body sequentially and reports p50/p99 latency besides the
// mean (ns/op) and throughput (calls/s).
func benchPost(b *testing.B, url, token, body string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	lat := make([]time.Duration, 0, b.N)
	payload := []byte(body)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		req, _ := http.NewRequest("POST", url, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		b.ReportMetric(float64(lat[n/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "calls/s")
	}
}

// BenchmarkStartup measures exec of the handler binary to its first
// answered initialize.
func BenchmarkStartup(b *testing.B) {
	st := startStack(b, nil) // Azurite and the issuer; its own handler is unused here
	tid, oid := newUser()
	tok := st.Issuer.Token(b, tid, oid)
	port := st.Handler.Port
	st.Handler.Stop() // reuse the port: the issuer's audience names it
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp"
	client := &http.Client{Timeout: time.Second}
	for b.Loop() {
		t0 := time.Now()
		cmd := exec.Command(handlerBin)
		cmd.Env = []string{
			"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port), "MCP_LISTEN_HOST=127.0.0.1",
			"AzureWebJobsStorage=" + st.Azurite.ConnectionString,
			"MCP_TOKEN_JWKS=" + string(st.Issuer.JWKS()),
			"MCP_TOKEN_ISSUER=" + st.Issuer.Issuer(),
			"MCP_RESOURCE_URL=" + st.Issuer.Resource(),
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			req, _ := http.NewRequest("POST", url, bytes.NewReader([]byte(initBody)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Since(t0) > 10*time.Second {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				b.Fatalf("no answer to initialize after 10 s (last error %v)", err)
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "ms-to-initialize")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}
