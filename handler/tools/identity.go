package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/auth"
)

type helloArgs = noArgs

// Whoami is hello's answer.
type Whoami struct {
	Subject           string `json:"subject" jsonschema:"stable user id: <tenant id>:<object id>"`
	TenantID          string `json:"tenant_id" jsonschema:"Microsoft Entra tenant id"`
	ObjectID          string `json:"object_id" jsonschema:"Microsoft Entra object id of the user"`
	Name              string `json:"name,omitempty" jsonschema:"display name"`
	PreferredUsername string `json:"preferred_username,omitempty" jsonschema:"sign-in name, usually an e-mail address"`
	ClientID          string `json:"client_id,omitempty" jsonschema:"the MCP client the token was issued to"`
	Scope             string `json:"scope,omitempty" jsonschema:"granted scopes"`
	Resource          string `json:"resource,omitempty" jsonschema:"the resource (audience) the token is for"`
	AuthMode          string `json:"auth_mode" jsonschema:"token, or local when the server runs with authentication off"`
}

func (t *toolset) hello() server.ServerTool {
	tool := mcp.NewTool("hello",
		mcp.WithTitleAnnotation("Who am I"),
		mcp.WithDescription("Returns the signed-in user as this server sees them: display name, "+
			"sign-in name, tenant and object id, and the MCP client and scopes of the access token. "+
			"Use it to check which account the workspace tools act for."),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[Whoami](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "hello", func(_ context.Context, who auth.Identity, _ helloArgs) (Whoami, error) {
		mode := "token"
		if t.d.AuthOff {
			mode = "local"
		}
		return Whoami{
			Subject: who.Subject, TenantID: who.TenantID, ObjectID: who.ObjectID,
			Name: who.Name, PreferredUsername: who.PreferredUsername, ClientID: who.ClientID,
			Scope: who.Scope, Resource: who.Audience, AuthMode: mode,
		}, nil
	})}
}
