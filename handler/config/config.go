// Package config reads the handler's settings from the environment, using the
// names the Functions host, the infrastructure and the gateway agree on.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// DefaultPort is used when the Functions host does not pass
// FUNCTIONS_CUSTOMHANDLER_PORT, i.e. when the handler runs standalone.
const DefaultPort = 8080

// Config is everything the handler needs to start.
type Config struct {
	// Port to listen on (FUNCTIONS_CUSTOMHANDLER_PORT).
	Port int
	// ListenHost is the interface to bind (MCP_LISTEN_HOST). The Functions
	// host proxies over loopback, so loopback is the default.
	ListenHost string
	// ResourceURL is the Streamable HTTP resource identifier (MCP_RESOURCE_URL),
	// e.g. https://<gateway>/mcp. It is also the public base for URLs the
	// server hands out, and (with "/sse" appended) the SSE resource identifier.
	ResourceURL *url.URL
	// AuthOff serves every request as a fixed local user (MCP_AUTH=off).
	AuthOff bool
	// Issuer is the expected "iss" of access tokens (MCP_TOKEN_ISSUER).
	Issuer string
	// JWKS is the JSON Web Key Set the handler trusts (MCP_TOKEN_JWKS).
	JWKS []byte
	// Storage says how to reach Blob and Queue storage (AzureWebJobsStorage*).
	Storage storage.Settings
	// Debug turns on debug logging (MCP_LOG_LEVEL=debug).
	Debug bool
	// InternalKey authenticates API Management's calls to the internal
	// OAuth API (MCP_INTERNAL_KEY) and keys the MACs of SSE message URLs
	// (purpose sse-instance); it also turns on the SSE backplane. A secret:
	// never log it.
	InternalKey string
	// FamilyCheckTTL is how long a token family's status is cached
	// (MCP_FAMILY_CHECK_SECONDS, default 5).
	FamilyCheckTTL time.Duration
	// DocumentsFromPrivateAddresses lets Client ID Metadata Documents be
	// fetched from loopback and private addresses
	// (MCP_CIMD_PRIVATE_ADDRESSES=allow): local runs and tests only, since
	// a client_id URL is chosen by whoever calls /authorize.
	DocumentsFromPrivateAddresses bool
}

// Load reads the configuration through getenv (os.Getenv in production, a map
// in tests). readFile loads MCP_TOKEN_JWKS when it names a file.
func Load(getenv func(string) string, readFile func(string) ([]byte, error)) (Config, error) {
	var c Config
	var errs []error

	c.Port = DefaultPort
	c.ListenHost = strings.TrimSpace(getenv("MCP_LISTEN_HOST"))
	if c.ListenHost == "" {
		c.ListenHost = "127.0.0.1"
	}
	if p := strings.TrimSpace(getenv("FUNCTIONS_CUSTOMHANDLER_PORT")); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("FUNCTIONS_CUSTOMHANDLER_PORT=%q is not a port number", p))
		} else {
			c.Port = n
		}
	}

	switch v := strings.ToLower(strings.TrimSpace(getenv("MCP_AUTH"))); v {
	case "", "on":
	case "off":
		c.AuthOff = true
	default:
		errs = append(errs, fmt.Errorf("MCP_AUTH=%q: use \"off\" (local development only) or leave it unset", v))
	}

	switch v := strings.ToLower(strings.TrimSpace(getenv("MCP_LOG_LEVEL"))); v {
	case "", "info":
	case "debug":
		c.Debug = true
	default:
		errs = append(errs, fmt.Errorf("MCP_LOG_LEVEL=%q: use \"info\" or \"debug\"", v))
	}

	if raw := strings.TrimSpace(getenv("MCP_RESOURCE_URL")); raw != "" {
		u, err := parseResourceURL(raw)
		if err != nil {
			errs = append(errs, err)
		}
		c.ResourceURL = u
	} else if c.AuthOff {
		c.ResourceURL = &url.URL{Scheme: "http", Host: "localhost:" + strconv.Itoa(c.Port), Path: "/mcp"}
	} else {
		errs = append(errs, errors.New("MCP_RESOURCE_URL is required (e.g. https://<gateway>/mcp)"))
	}

	if !c.AuthOff {
		c.Issuer = strings.TrimSpace(getenv("MCP_TOKEN_ISSUER"))
		if c.Issuer == "" {
			errs = append(errs, errors.New("MCP_TOKEN_ISSUER is required (the gateway origin, e.g. https://<gateway>)"))
		}
		jwks, err := loadJWKS(getenv("MCP_TOKEN_JWKS"), readFile)
		if err != nil {
			errs = append(errs, err)
		}
		c.JWKS = jwks
	}

	c.InternalKey = strings.TrimSpace(getenv("MCP_INTERNAL_KEY"))
	if c.InternalKey != "" {
		if b, err := base64.StdEncoding.DecodeString(c.InternalKey); err != nil || len(b) < 32 {
			errs = append(errs, errors.New("MCP_INTERNAL_KEY must be at least 32 random bytes in base64"))
		}
	}
	c.FamilyCheckTTL = 5 * time.Second
	if v := strings.TrimSpace(getenv("MCP_FAMILY_CHECK_SECONDS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 300 {
			errs = append(errs, fmt.Errorf("MCP_FAMILY_CHECK_SECONDS=%q: use 1 to 300", v))
		} else {
			c.FamilyCheckTTL = time.Duration(n) * time.Second
		}
	}

	switch v := strings.ToLower(strings.TrimSpace(getenv("MCP_CIMD_PRIVATE_ADDRESSES"))); v {
	case "", "deny":
	case "allow":
		c.DocumentsFromPrivateAddresses = true
	default:
		errs = append(errs, fmt.Errorf("MCP_CIMD_PRIVATE_ADDRESSES=%q: use \"allow\" (local runs and tests only) or leave it unset", v))
	}

	st, err := storage.SettingsFromEnv(getenv)
	if err != nil {
		errs = append(errs, err)
	}
	c.Storage = st

	if len(errs) > 0 {
		return Config{}, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

// FromEnvironment is Load with the process environment.
func FromEnvironment() (Config, error) {
	return Load(os.Getenv, os.ReadFile)
}

func parseResourceURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("MCP_RESOURCE_URL=%q must be an absolute http(s) URL such as https://<gateway>/mcp", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("MCP_RESOURCE_URL=%q must not carry a query, fragment or user info", raw)
	}
	if u.Path == "" || strings.HasSuffix(u.Path, "/") {
		return nil, fmt.Errorf("MCP_RESOURCE_URL=%q must name the MCP endpoint without a trailing slash, e.g. https://<gateway>/mcp", raw)
	}
	return u, nil
}

// loadJWKS accepts the key set inline (the app setting holds the JSON) or as a
// path to a file, which is handier for local runs.
func loadJWKS(v string, readFile func(string) ([]byte, error)) ([]byte, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return nil, errors.New("MCP_TOKEN_JWKS is required: the JSON Web Key Set of the token signing keys (or set MCP_AUTH=off for local development)")
	case strings.HasPrefix(v, "{"):
		return []byte(v), nil
	default:
		b, err := readFile(v)
		if err != nil {
			return nil, fmt.Errorf("MCP_TOKEN_JWKS: reading key set file: %w", err)
		}
		return b, nil
	}
}

// ListenAddr is the address to bind.
func (c Config) ListenAddr() string {
	return net.JoinHostPort(c.ListenHost, strconv.Itoa(c.Port))
}

// Origin is the scheme and host of the public base URL.
func (c Config) Origin() string {
	return c.ResourceURL.Scheme + "://" + c.ResourceURL.Host
}

// SSEResource is the resource identifier of the legacy SSE endpoint.
func (c Config) SSEResource() string {
	return c.ResourceURL.String() + "/sse"
}
