// Package auth makes the handler an OAuth 2.1 resource server for the MCP
// access tokens that API Management mints (RFC 9068 JWTs signed with RS256).
//
// API Management validates every token before it forwards a request; the
// handler validates it again so that a misrouted or direct request to the
// Function App never runs as somebody else. The handler holds only the public
// keys (a JWKS), so it can check tokens but never mint them.
//
// The package provides the JWKS parser, the token [Validator], the HTTP
// middleware that answers 401 with the RFC 9728 pointer MCP clients need to
// start the OAuth flow, and the RFC 9728 protected resource metadata handler.
package auth

import (
	"github.com/mcp-apim/remote-mcp/handler/guid"

	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Identity is the caller as the verified access token describes it.
type Identity struct {
	// Subject is the token's sub claim, always "<tid>:<oid>".
	Subject string
	// TenantID is the Entra tenant of the user (tid), a GUID.
	TenantID string
	// ObjectID is the Entra object id of the user (oid), a GUID.
	ObjectID string
	// Name is the display name (name); informational only.
	Name string
	// PreferredUsername is the sign-in name (preferred_username); informational
	// only: Entra lets users and admins change it, so never key data on it.
	PreferredUsername string
	// ClientID is the OAuth client the token was issued to (client_id).
	ClientID string
	// Scope is the space-separated scope list of the token (scope).
	Scope string
	// FamilyID identifies the refresh-token family the token belongs to (fid);
	// revoking the family revokes the token.
	FamilyID string
	// Audience is the one accepted audience the token was matched against.
	Audience string
	// ExpiresAt is the token's exp; zero for the local user when auth is off.
	ExpiresAt time.Time
}

// Owner returns "<tid>/<oid>" in lower case, the per-user storage namespace.
// It is derived from the token, never from tool arguments, and is lower-cased
// because GUIDs are case-insensitive while blob and queue names are not.
func (id Identity) Owner() string {
	return strings.ToLower(id.TenantID) + "/" + strings.ToLower(id.ObjectID)
}

// HasScope reports whether the space-separated Scope contains scope.
func (id Identity) HasScope(scope string) bool {
	return scope != "" && slices.Contains(strings.Fields(id.Scope), scope)
}

// checkNamespace refuses identities whose tid or oid could not safely become
// part of a storage path.
func (id Identity) checkNamespace() error {
	if !guid.Valid(id.TenantID) {
		return errors.New("tid must be a GUID")
	}
	if !guid.Valid(id.ObjectID) {
		return errors.New("oid must be a GUID")
	}
	return nil
}

// identityKey is unexported so that no other package can read or overwrite
// the identity except through WithIdentity and IdentityFrom.
type identityKey struct{}

// WithIdentity returns a copy of ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity the Authenticator stored in ctx.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
