package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	mcpgoclient "github.com/mark3labs/mcp-go/client"
	mcpgotransport "github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// toolClient is what the scenarios need from an MCP client; each real client
// library is adapted to it, so every scenario runs with every client.
type toolClient interface {
	ListTools(ctx context.Context) ([]string, error)
	// Call returns the structured result (or the text content when there is
	// none), whether it is an error result, and the text content.
	Call(ctx context.Context, name string, args map[string]any) (toolResult, error)
	Close() error
}

type toolResult struct {
	IsError    bool
	Text       string
	Structured json.RawMessage
}

func (r toolResult) decode(t testing.TB, v any) {
	t.Helper()
	if r.IsError {
		t.Fatalf("tool failed: %s", r.Text)
	}
	if err := json.Unmarshal(r.Structured, v); err != nil {
		t.Fatalf("decoding structured content %s: %v", r.Structured, err)
	}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}

func httpClient(token string) *http.Client {
	return &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}
}

// --- mcp-go ---

type mcpgoClient struct{ c *mcpgoclient.Client }

func connectMCPGo(ctx context.Context, transport, url, token string) (toolClient, error) {
	var c *mcpgoclient.Client
	var err error
	headers := map[string]string{}
	if token != "" {
		headers["Authorization"] = "Bearer " + token
	}
	switch transport {
	case "streamable":
		c, err = mcpgoclient.NewStreamableHttpClient(url, mcpgotransport.WithHTTPHeaders(headers))
	case "sse":
		c, err = mcpgoclient.NewSSEMCPClient(url, mcpgotransport.WithHeaders(headers))
	default:
		return nil, fmt.Errorf("unknown transport %q", transport)
	}
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	req := mcpgo.InitializeRequest{}
	req.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	req.Params.ClientInfo = mcpgo.Implementation{Name: "e2e-mcp-go", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		c.Close()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	return mcpgoClient{c}, nil
}

func (m mcpgoClient) ListTools(ctx context.Context) ([]string, error) {
	res, err := m.c.ListTools(ctx, mcpgo.ListToolsRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, t := range res.Tools {
		names = append(names, t.Name)
	}
	return names, nil
}

func (m mcpgoClient) Call(ctx context.Context, name string, args map[string]any) (toolResult, error) {
	req := mcpgo.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := m.c.CallTool(ctx, req)
	if err != nil {
		return toolResult{}, err
	}
	out := toolResult{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := c.(mcpgo.TextContent); ok {
			out.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		out.Structured, err = json.Marshal(res.StructuredContent)
	}
	return out, err
}

func (m mcpgoClient) Close() error { return m.c.Close() }

// --- the official go-sdk ---

type sdkClient struct{ s *sdk.ClientSession }

func connectSDK(ctx context.Context, transport, url, token string) (toolClient, error) {
	var tr sdk.Transport
	switch transport {
	case "streamable":
		tr = &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: httpClient(token), MaxRetries: -1}
	case "sse":
		tr = &sdk.SSEClientTransport{Endpoint: url, HTTPClient: httpClient(token)}
	default:
		return nil, fmt.Errorf("unknown transport %q", transport)
	}
	c := sdk.NewClient(&sdk.Implementation{Name: "e2e-go-sdk", Version: "1"}, nil)
	s, err := c.Connect(ctx, tr, nil)
	if err != nil {
		return nil, err
	}
	return sdkClient{s}, nil
}

func (c sdkClient) ListTools(ctx context.Context) ([]string, error) {
	res, err := c.s.ListTools(ctx, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, t := range res.Tools {
		names = append(names, t.Name)
	}
	return names, nil
}

func (c sdkClient) Call(ctx context.Context, name string, args map[string]any) (toolResult, error) {
	res, err := c.s.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return toolResult{}, err
	}
	out := toolResult{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			out.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		out.Structured, err = json.Marshal(res.StructuredContent)
	}
	return out, err
}

func (c sdkClient) Close() error { return c.s.Close() }

type connectFunc func(ctx context.Context, transport, url, token string) (toolClient, error)

// clientMatrix is every (client library, transport) pair under test.
var clientMatrix = []struct {
	name      string
	connect   connectFunc
	transport string
	path      string
}{
	{"mcp-go/streamable", connectMCPGo, "streamable", "/mcp"},
	{"mcp-go/sse", connectMCPGo, "sse", "/mcp/sse"},
	{"go-sdk/streamable", connectSDK, "streamable", "/mcp"},
	{"go-sdk/sse", connectSDK, "sse", "/mcp/sse"},
}
