package auth_test

import (
	"context"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth"
)

func TestIdentityOwner(t *testing.T) {
	id := auth.Identity{TenantID: tid, ObjectID: "ABCDEF00-0000-0000-0000-0000000000A1"}
	if got, want := id.Owner(), "72f988bf-86f1-41af-91ab-2d7cd011db47/abcdef00-0000-0000-0000-0000000000a1"; got != want {
		t.Errorf("Owner() = %q, want %q", got, want)
	}
}

func TestIdentityHasScope(t *testing.T) {
	tests := []struct {
		scope, want string
		ok          bool
	}{
		{"mcp.tools", "mcp.tools", true},
		{"openid mcp.tools", "mcp.tools", true},
		{"mcp.tools.admin", "mcp.tools", false},
		{"", "mcp.tools", false},
		{"mcp.tools", "", false},
	}
	for _, tt := range tests {
		if got := (auth.Identity{Scope: tt.scope}).HasScope(tt.want); got != tt.ok {
			t.Errorf("Identity{Scope: %q}.HasScope(%q) = %v, want %v", tt.scope, tt.want, got, tt.ok)
		}
	}
}

func TestIdentityContext(t *testing.T) {
	if _, ok := auth.IdentityFrom(context.Background()); ok {
		t.Error("IdentityFrom(empty context) reported an identity")
	}
	// A string key with the same spelling must not be mistaken for ours.
	type fakeKey string
	ctx := context.WithValue(context.Background(), fakeKey("identityKey"), auth.Identity{Subject: "x"})
	if _, ok := auth.IdentityFrom(ctx); ok {
		t.Error("IdentityFrom found an identity stored under another key")
	}
	want := auth.Identity{Subject: tid + ":" + oid, TenantID: tid, ObjectID: oid}
	got, ok := auth.IdentityFrom(auth.WithIdentity(context.Background(), want))
	if !ok || got != want {
		t.Errorf("IdentityFrom(WithIdentity(id)) = %+v, %v", got, ok)
	}
}
