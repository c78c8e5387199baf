package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/httpapi"
	"github.com/mcp-apim/remote-mcp/handler/queues"
	"github.com/mcp-apim/remote-mcp/handler/snippets"
	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/tools"
)

// FuzzMCPRequest posts arbitrary bodies to /mcp through the whole stack
// (guard, body limit, auth, mcp-go, tool argument binding): whatever comes
// in, the answer is a 4xx or a JSON-RPC message, never a 500 or a panic.
// Storage points at a closed port, so a tool that gets that far fails
// quickly with a tool error.
func FuzzMCPRequest(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_snippet","arguments":{"name":"../x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_snippet","arguments":{"name":5}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"queue_send","arguments":{"queue":"A--b","message":"x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_snippets","arguments":{"limit":"ten"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`null`, `""`, `{`, "\x00", `{"jsonrpc":"2.0","id":1e999,"method":"ping"}`,
	} {
		f.Add(seed)
	}
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
		r.Host = "localhost"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.String())
		}
		out := w.Body.String()
		if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
			t.Fatalf("internals in the answer to %q: %s", body, out)
		}
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && out != "" && !json.Valid([]byte(out)) {
			t.Fatalf("invalid JSON answer to %q: %s", body, out)
		}
	})
}

func fuzzHandler(tb testing.TB) http.Handler {
	tb.Helper()
	clients, err := storage.NewClients(storage.Settings{
		BlobServiceURL:  "http://127.0.0.1:1/devstoreaccount1",
		QueueServiceURL: "http://127.0.0.1:1/devstoreaccount1",
		AccountName:     storage.DevelopmentAccountName,
		Credential:      storage.SharedKey,
		Development:     true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	local := auth.LocalUser()
	resource, _ := url.Parse("http://localhost/mcp")
	api, err := httpapi.New(httpapi.Options{
		MCP: tools.NewServer(tools.Deps{
			Snippets: snippets.New(clients.Blob, "snippets"),
			Queues:   queues.New(clients.Queue),
			AuthOff:  true,
		}, "fuzz"),
		ResourceURL: resource,
		LocalUser:   &local,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return api.Handler()
}
