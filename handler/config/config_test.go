package config

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

const jwks = `{"keys":[]}`

func TestLoad(t *testing.T) {
	base := map[string]string{
		"AzureWebJobsStorage": "UseDevelopmentStorage=true",
		"MCP_RESOURCE_URL":    "https://gw.example.net/mcp",
		"MCP_TOKEN_ISSUER":    "https://gw.example.net",
		"MCP_TOKEN_JWKS":      jwks,
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<unset>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	files := map[string]string{"/keys/jwks.json": jwks}
	readFile := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}

	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // substring; "" means success
		check   func(t *testing.T, c Config)
	}{
		{name: "production", env: base, check: func(t *testing.T, c Config) {
			if c.Port != DefaultPort || c.AuthOff || c.ListenAddr() != "127.0.0.1:8080" {
				t.Errorf("%+v", c)
			}
			if c.Origin() != "https://gw.example.net" || c.SSEResource() != "https://gw.example.net/mcp/sse" {
				t.Errorf("origin %q sse %q", c.Origin(), c.SSEResource())
			}
		}},
		{name: "port from host", env: with("FUNCTIONS_CUSTOMHANDLER_PORT", "34567"), check: func(t *testing.T, c Config) {
			if c.Port != 34567 {
				t.Errorf("port %d", c.Port)
			}
		}},
		{name: "bad port", env: with("FUNCTIONS_CUSTOMHANDLER_PORT", "70000"), wantErr: "FUNCTIONS_CUSTOMHANDLER_PORT"},
		{name: "jwks from file", env: with("MCP_TOKEN_JWKS", "/keys/jwks.json"), check: func(t *testing.T, c Config) {
			if string(c.JWKS) != jwks {
				t.Errorf("jwks %q", c.JWKS)
			}
		}},
		{name: "jwks file missing", env: with("MCP_TOKEN_JWKS", "/nope.json"), wantErr: "MCP_TOKEN_JWKS"},
		{name: "no jwks", env: with("MCP_TOKEN_JWKS", "<unset>"), wantErr: "MCP_TOKEN_JWKS is required"},
		{name: "no issuer", env: with("MCP_TOKEN_ISSUER", "<unset>"), wantErr: "MCP_TOKEN_ISSUER"},
		{name: "no resource", env: with("MCP_RESOURCE_URL", "<unset>"), wantErr: "MCP_RESOURCE_URL is required"},
		{name: "relative resource", env: with("MCP_RESOURCE_URL", "/mcp"), wantErr: "absolute"},
		{name: "resource with slash", env: with("MCP_RESOURCE_URL", "https://gw/mcp/"), wantErr: "trailing slash"},
		{name: "resource with query", env: with("MCP_RESOURCE_URL", "https://gw/mcp?x=1"), wantErr: "query"},
		{name: "auth off needs no keys", env: map[string]string{"MCP_AUTH": "off", "AzureWebJobsStorage": "UseDevelopmentStorage=true", "FUNCTIONS_CUSTOMHANDLER_PORT": "7071"},
			check: func(t *testing.T, c Config) {
				if !c.AuthOff || c.ResourceURL.String() != "http://localhost:7071/mcp" {
					t.Errorf("%+v", c)
				}
			}},
		{name: "auth typo", env: with("MCP_AUTH", "of"), wantErr: "MCP_AUTH"},
		{name: "documents from public addresses by default", env: base, check: func(t *testing.T, c Config) {
			if c.DocumentsFromPrivateAddresses {
				t.Error("private addresses allowed by default")
			}
		}},
		{name: "documents from private addresses", env: with("MCP_CIMD_PRIVATE_ADDRESSES", "allow"), check: func(t *testing.T, c Config) {
			if !c.DocumentsFromPrivateAddresses {
				t.Error("allow was not taken")
			}
		}},
		{name: "documents setting typo", env: with("MCP_CIMD_PRIVATE_ADDRESSES", "yes"), wantErr: "MCP_CIMD_PRIVATE_ADDRESSES"},
		{name: "no storage", env: with("AzureWebJobsStorage", "<unset>"), wantErr: "AzureWebJobsStorage"},
		{name: "every error at once", env: map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "x"}, wantErr: "MCP_TOKEN_ISSUER"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(func(k string) string { return tc.env[k] }, readFile)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestLoadNeverEchoesStorageKeys(t *testing.T) {
	_, err := Load(func(k string) string {
		if k == "AzureWebJobsStorage" {
			return "AccountName=a;AccountKey=c2VjcmV0LWtleQ==;Garbage"
		}
		return ""
	}, func(string) ([]byte, error) { return nil, errors.New("no") })
	if err != nil && strings.Contains(err.Error(), "c2VjcmV0LWtleQ") {
		t.Fatalf("error leaks the account key: %v", err)
	}
}
