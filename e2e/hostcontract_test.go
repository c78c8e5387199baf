package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// TestHostContract stages dist/ as `make build` and azd do, checks it the way
// the Functions host reads it, then runs the staged binary behind a proxy
// that forwards as the host does with enableProxyingHttpRequest and
// routePrefix "": every path, unbuffered, keeping the public Host header.
func TestHostContract(t *testing.T) {
	dist := t.TempDir()
	stage := exec.Command("go", "run", "./scripts/stage", "-out", dist)
	stage.Dir = ".."
	if out, err := stage.CombinedOutput(); err != nil {
		t.Fatalf("staging: %v\n%s", err, out)
	}

	host := validateJSON(t, "testdata/schemas/host.json.schema.json", filepath.Join(dist, "host.json"))
	// The schema check must be able to fail: a misspelt proxying switch,
	// which the host would silently ignore, is rejected.
	typo := filepath.Join(t.TempDir(), "host.json")
	raw, _ := os.ReadFile(filepath.Join(dist, "host.json"))
	if err := os.WriteFile(typo, []byte(strings.Replace(string(raw), "enableProxyingHttpRequest", "enableProxyingHttpRequests", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := schemaErr(t, "testdata/schemas/host.json.schema.json", typo); err == nil {
		t.Fatal("host.json schema accepted enableProxyingHttpRequests")
	}
	ch := host["customHandler"].(map[string]any)
	if ch["enableProxyingHttpRequest"] != true {
		t.Error("host.json: customHandler.enableProxyingHttpRequest must be true (forwarding buffers SSE)")
	}
	if p := host["extensions"].(map[string]any)["http"].(map[string]any)["routePrefix"]; p != "" {
		t.Errorf("host.json: routePrefix = %v, want \"\"", p)
	}
	exe := ch["description"].(map[string]any)["defaultExecutablePath"].(string)
	bin := filepath.Join(dist, exe)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("defaultExecutablePath %q: %v", exe, err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Fatalf("%s lacks the run bit: %v", exe, fi.Mode())
	}

	// The host finds functions only in immediate subfolders of the root.
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	functions := 0
	for _, e := range entries {
		fj := filepath.Join(dist, e.Name(), "function.json")
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(fj); err != nil {
			t.Errorf("folder %s at the package root has no function.json", e.Name())
			continue
		}
		functions++
		fn := validateJSON(t, "testdata/schemas/function.json.schema.draft07.json", fj)
		for _, b := range fn["bindings"].([]any) {
			b := b.(map[string]any)
			if b["type"] == "httpTrigger" && b["route"] != "{*path}" {
				t.Errorf("%s: route %v, want the catch-all {*path}", fj, b["route"])
			}
		}
	}
	if functions == 0 {
		t.Fatal("no function folders staged")
	}

	// Run the staged binary as the host would and go through the proxy.
	az := testenv.StartAzurite(t)
	const public = "https://gw.example.net"
	iss := authtest.NewIssuer(t, public)
	handler := startBinary(t, bin, 0, map[string]string{
		"AzureWebJobsStorage": az.ConnectionString,
		"MCP_TOKEN_JWKS":      string(iss.JWKS()),
		"MCP_TOKEN_ISSUER":    public,
		"MCP_RESOURCE_URL":    public + "/mcp",
		"WEBSITE_HOSTNAME":    "myfunc.azurewebsites.net",
	})
	tid, oid := newUser()
	tok := iss.Token(t, tid, oid)

	for _, forwardedHost := range []string{"gw.example.net", "myfunc.azurewebsites.net"} {
		t.Run("Host="+forwardedHost, func(t *testing.T) {
			proxy := startHostProxy(t, handler.Port, forwardedHost)
			for _, cm := range clientMatrix {
				ctx := ctxTimeout(t, 30*time.Second)
				c, err := cm.connect(ctx, cm.transport, proxy+cm.path, tok)
				if err != nil {
					t.Fatalf("%s through the host proxy: %v", cm.name, err)
				}
				r, err := c.Call(ctx, "hello", nil)
				c.Close()
				if err != nil || r.IsError {
					t.Fatalf("%s hello: %v %s", cm.name, err, r.Text)
				}
			}
		})
	}
	t.Run("rebinding Host refused", func(t *testing.T) {
		proxy := startHostProxy(t, handler.Port, "evil.example.com")
		resp, body := do(t, "POST", proxy+"/mcp", tok, initBody, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("health through the host", func(t *testing.T) {
		proxy := startHostProxy(t, handler.Port, "gw.example.net")
		resp, body := do(t, "GET", proxy+"/healthz", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("healthz: %d %s", resp.StatusCode, body)
		}
	})
}

// startHostProxy stands in for the Functions host's HTTP proxying: it
// forwards every path to the handler's port on loopback, streams responses
// and sets Host to hostHeader, as the host keeps the public one.
func startHostProxy(t testing.TB, port int, hostHeader string) string {
	t.Helper()
	target, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(port))
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Host = hostHeader
		},
		FlushInterval: -1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// schemaErr validates docPath against schemaPath.
func schemaErr(t testing.TB, schemaPath, docPath string) error {
	t.Helper()
	sch, err := jsonschema.NewCompiler().Compile(schemaPath)
	if err != nil {
		t.Fatalf("compiling %s: %v", schemaPath, err)
	}
	f, err := os.Open(docPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inst, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", docPath, err)
	}
	return sch.Validate(inst)
}

// validateJSON fails the test unless docPath matches schemaPath, and returns
// the document.
func validateJSON(t testing.TB, schemaPath, docPath string) map[string]any {
	t.Helper()
	if err := schemaErr(t, schemaPath, docPath); err != nil {
		t.Fatalf("%s does not match %s: %v", docPath, schemaPath, err)
	}
	raw, _ := os.ReadFile(docPath)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
