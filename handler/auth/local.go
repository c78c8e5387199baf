package auth

// LocalUser is the one caller of a handler running with authentication off
// (MCP_AUTH=off, local development). Its ids are fixed GUIDs so that the
// storage namespace stays the same across runs.
func LocalUser() Identity {
	const tid, oid = "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000001"
	return Identity{
		Subject:           tid + ":" + oid,
		TenantID:          tid,
		ObjectID:          oid,
		Name:              "Local developer",
		PreferredUsername: "local@localhost",
		Scope:             DefaultScope,
	}
}
