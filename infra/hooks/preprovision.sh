#!/bin/sh
# azd preprovision hook (POSIX): makes sure the azd environment holds the front door's keys before
# Bicep runs, generating only what is missing and never replacing what is there (a new signing key
# would sign every user out; FRONTDOOR.md "Keys").
#
#   MCP_FRONTDOOR_KEYS  base64 of the JSON key set of `go run ./scripts/keygen` (TokenSigningKey,
#                       TokenSigningKid, TokenJwks, TokenJwkN, TokenJwkE, BrowserKey, InternalKey);
#                       infra/main.parameters.json passes it to Bicep, which writes the Key Vault
#                       secrets. Base64, because the JWKS's quotes would not survive azd's
#                       substitution into the parameters file.
#   MCP_FUNCTION_KEY    the dedicated host key API Management sends as x-functions-key.
#
# Where the azd environment is new each run (CI), provide both as secrets: generating them there
# would rotate them on every run, so this hook refuses to unless MCP_ALLOW_KEY_GENERATION=true.
set -eu

missing=""
command -v go >/dev/null 2>&1 || missing="$missing go (Go 1.26 or later: https://go.dev/dl/)"
command -v azd >/dev/null 2>&1 || missing="$missing azd (https://aka.ms/azd-install)"
command -v base64 >/dev/null 2>&1 || missing="$missing base64 (coreutils)"
if [ -n "$missing" ]; then
  echo "preprovision: missing:$missing" >&2
  exit 1
fi

# The repository root (this file is infra/hooks/preprovision.sh).
cd "$(dirname "$0")/../.."

# Value of a name in the azd environment, else in the process environment, else empty.
env_value() {
  if v=$(azd env get-value "$1" 2>/dev/null) && [ -n "$v" ]; then
    printf '%s' "$v"
  else
    eval "printf '%s' \"\${$1:-}\""
  fi
}
in_azd_env() {
  v=$(azd env get-value "$1" 2>/dev/null) && [ -n "$v" ]
}

generation_allowed() {
  if [ -n "${CI:-}" ] && [ "${MCP_ALLOW_KEY_GENERATION:-}" != "true" ]; then
    echo "preprovision: $1 is not set, and this looks like CI (CI=$CI): provide it as a pipeline secret" >&2
    echo "  (copy it from the azd environment that deployed first: azd env get-value $1)," >&2
    echo "  or set MCP_ALLOW_KEY_GENERATION=true to generate a new one, which signs every user out." >&2
    return 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
chmod 700 "$tmp"
keys="$tmp/keys.json"

current=$(env_value MCP_FRONTDOOR_KEYS)
if [ -n "$current" ]; then
  if ! printf '%s' "$current" | base64 --decode > "$keys" 2>/dev/null; then
    echo "preprovision: MCP_FRONTDOOR_KEYS is not valid base64; not replacing it (fix or remove it: azd env get-value MCP_FRONTDOOR_KEYS)" >&2
    exit 1
  fi
else
  generation_allowed MCP_FRONTDOOR_KEYS || exit 1
fi

# keygen adds whatever key the file lacks, keeps the others byte for byte, and refuses a key set
# whose parts do not belong together. It prints names, never values.
go run ./scripts/keygen -file "$keys"

encoded=$(base64 < "$keys" | tr -d '\r\n')
if [ "$encoded" != "$current" ] || ! in_azd_env MCP_FRONTDOOR_KEYS; then
  azd env set MCP_FRONTDOOR_KEYS "$encoded" >/dev/null
  echo "preprovision: MCP_FRONTDOOR_KEYS saved in the azd environment"
fi

fkey=$(env_value MCP_FUNCTION_KEY)
if [ -z "$fkey" ]; then
  generation_allowed MCP_FUNCTION_KEY || exit 1
  # 32 random bytes, base64url without padding (safe in headers and URLs).
  fkey=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\r\n')
  echo "preprovision: generated MCP_FUNCTION_KEY"
fi
if ! in_azd_env MCP_FUNCTION_KEY; then
  azd env set MCP_FUNCTION_KEY "$fkey" >/dev/null
  echo "preprovision: MCP_FUNCTION_KEY saved in the azd environment"
fi
