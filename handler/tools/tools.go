// Package tools defines the MCP server and its tools: who-am-I, text
// snippets in Blob storage and task queues in Queue storage, each scoped to
// the calling user.
package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/queues"
	"github.com/mcp-apim/remote-mcp/handler/snippets"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Deps are the services the tools call.
type Deps struct {
	Snippets *snippets.Store
	Queues   *queues.Service
	// AuthOff marks identities as the fixed local user in hello's answer.
	AuthOff bool
	Logger  *slog.Logger
}

// ServerName is reported in the initialize result.
const ServerName = "remote-mcp-functions"

const instructions = `Tools for a personal workspace kept in Azure Storage.
Snippets are named text documents (save_snippet, get_snippet, list_snippets, delete_snippet).
Task queues hold short text messages for later processing (queue_send, queue_peek, queue_receive, queue_list).
Everything is private to the signed-in user; call hello to see who that is.`

// NewServer returns the MCP server with every tool registered.
func NewServer(d Deps, version string) *server.MCPServer {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := server.NewMCPServer(ServerName, version,
		server.WithToolCapabilities(false),
		server.WithInstructions(instructions),
		server.WithInputSchemaValidation(),
		server.WithStrictInputSchemaDefault(),
		server.WithRecovery(),
		server.WithLogging(),
	)
	t := &toolset{d: d}
	s.AddTools(
		t.hello(),
		t.saveSnippet(), t.getSnippet(), t.listSnippets(), t.deleteSnippet(),
		t.queueSend(), t.queuePeek(), t.queueReceive(), t.queueList(),
	)
	return s
}

type toolset struct{ d Deps }

// handle adapts a typed tool function: it binds arguments, finds the caller
// and turns the outcome into a structured result or an isError result with a
// message a person can act on.
func handle[A, R any](d Deps, name string, fn func(ctx context.Context, who auth.Identity, args A) (R, error)) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		who, ok := auth.IdentityFrom(ctx)
		if !ok {
			return mcp.NewToolResultError("not signed in: the request carried no identity"), nil
		}
		var args A
		if err := req.BindArguments(&args); err != nil {
			return mcp.NewToolResultError("invalid arguments: " + bindMessage(err)), nil
		}
		res, err := fn(ctx, who, args)
		if err != nil {
			return errorResult(ctx, d.Logger, name, err), nil
		}
		text, err := json.Marshal(res)
		if err != nil {
			return errorResult(ctx, d.Logger, name, err), nil
		}
		return mcp.NewToolResultStructured(res, string(text)), nil
	}
}

// bindMessage keeps Go type names out of what the model reads.
func bindMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%q must be a %s", te.Field, jsonKind(te.Type.Kind().String()))
	}
	return "arguments must be a JSON object matching the tool's input schema"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int32", "int64", "uint", "uint32", "uint64", "float32", "float64":
		return "number"
	default:
		return "value of the documented type"
	}
}

// errorResult reports known failures in their own words and everything else
// generically: storage errors can carry URLs and request ids that must not
// reach a client.
func errorResult(ctx context.Context, log *slog.Logger, tool string, err error) *mcp.CallToolResult {
	switch {
	case errors.Is(err, storage.ErrInvalid), errors.Is(err, storage.ErrNotFound),
		errors.Is(err, storage.ErrConflict), errors.Is(err, storage.ErrTooLarge),
		errors.Is(err, storage.ErrUnavailable):
		return mcp.NewToolResultError(err.Error())
	case errors.Is(err, context.Canceled):
		return mcp.NewToolResultError("the request was cancelled")
	default:
		log.ErrorContext(ctx, "tool failed", "tool", tool, "err", err)
		return mcp.NewToolResultError("internal error; the failure was logged, try again later")
	}
}

// outputSchema declares T's JSON schema as the tool's output schema. The
// schema generator types every Go slice as ["null","array"], but results
// here always carry empty lists rather than null, and strict clients flag
// the nullable type; so it is narrowed to "array".
func outputSchema[T any]() mcp.ToolOption {
	declare := mcp.WithOutputSchema[T]()
	return func(t *mcp.Tool) {
		declare(t)
		for _, p := range t.OutputSchema.Properties {
			narrowNullableArrays(p)
		}
		for _, d := range t.OutputSchema.Defs {
			narrowNullableArrays(d)
		}
	}
}

func narrowNullableArrays(v any) {
	switch v := v.(type) {
	case map[string]any:
		if ts, ok := v["type"].([]any); ok && len(ts) == 2 && ts[0] == "null" && ts[1] == "array" {
			v["type"] = "array"
		}
		for _, c := range v {
			narrowNullableArrays(c)
		}
	case []any:
		for _, c := range v {
			narrowNullableArrays(c)
		}
	}
}
