package auth

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

const (
	// minRSABits follows NIST SP 800-57 and FRONTDOOR ("RSA 2048+").
	minRSABits = 2048
	// maxRSABits bounds verification cost; no sane signer uses more.
	maxRSABits = 8192
)

// KeySet holds the RSA public keys that may sign access tokens, by key id.
// It is immutable once parsed, so one KeySet can be shared by goroutines.
type KeySet struct {
	keys map[string]*rsa.PublicKey
	kids []string // document order, for Kids
}

// Kids returns the key ids in the order the JWKS listed them.
func (s *KeySet) Kids() []string { return slices.Clone(s.kids) }

// Len returns the number of keys.
func (s *KeySet) Len() int { return len(s.kids) }

// lookup returns the key with the given id.
func (s *KeySet) lookup(kid string) (*rsa.PublicKey, bool) {
	k, ok := s.keys[kid]
	return k, ok
}

// ParseJWKS parses a JSON Web Key Set (RFC 7517) of RS256 verification keys,
// such as the value of MCP_TOKEN_JWKS. It is strict on purpose: a key the
// validator could never use, or private key material, is a configuration
// mistake that should stop the handler at start-up rather than sign every
// user out later.
func ParseJWKS(data []byte) (*KeySet, error) {
	var doc struct {
		Keys *[]map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks: not a JSON object with a \"keys\" array: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`jwks: missing "keys" array`)
	}
	if len(*doc.Keys) == 0 {
		return nil, errors.New("jwks: the key set is empty")
	}
	set := &KeySet{keys: make(map[string]*rsa.PublicKey, len(*doc.Keys))}
	for i, raw := range *doc.Keys {
		kid, pub, err := parseJWK(raw)
		if err != nil {
			if kid != "" {
				return nil, fmt.Errorf("jwks: key %d (kid %q): %w", i, kid, err)
			}
			return nil, fmt.Errorf("jwks: key %d: %w", i, err)
		}
		if _, dup := set.keys[kid]; dup {
			return nil, fmt.Errorf("jwks: key %d: duplicate kid %q", i, kid)
		}
		set.keys[kid] = pub
		set.kids = append(set.kids, kid)
	}
	return set, nil
}

// parseJWK returns the kid as soon as it is known, so errors can name the key.
func parseJWK(m map[string]json.RawMessage) (kid string, pub *rsa.PublicKey, err error) {
	kid, ok, err := jwkString(m, "kid")
	if err != nil {
		return "", nil, err
	}
	if !ok || kid == "" {
		return "", nil, errors.New(`"kid" is required`)
	}
	kty, ok, err := jwkString(m, "kty")
	if err != nil {
		return kid, nil, err
	}
	if !ok {
		return kid, nil, errors.New(`"kty" is required`)
	}
	if kty != "RSA" {
		return kid, nil, fmt.Errorf(`"kty" is %q, only "RSA" keys are supported`, kty)
	}
	// Members that carry secret material (RFC 7518 section 6.3.2 for RSA, "k"
	// for symmetric keys): the Function App must never be able to mint tokens,
	// so a private key here is an error rather than something to ignore.
	for _, name := range [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, present := m[name]; present {
			return kid, nil, fmt.Errorf("contains private key material (%q): the handler must be given public keys only", name)
		}
	}
	if use, ok, err := jwkString(m, "use"); err != nil {
		return kid, nil, err
	} else if ok && use != "sig" {
		return kid, nil, fmt.Errorf(`"use" is %q, want "sig"`, use)
	}
	if alg, ok, err := jwkString(m, "alg"); err != nil {
		return kid, nil, err
	} else if ok && alg != "RS256" {
		return kid, nil, fmt.Errorf(`"alg" is %q, want "RS256"`, alg)
	}
	if raw, ok := m["key_ops"]; ok {
		var ops []string
		if err := json.Unmarshal(raw, &ops); err != nil {
			return kid, nil, fmt.Errorf(`"key_ops" must be an array of strings: %w`, err)
		}
		if !slices.Contains(ops, "verify") {
			return kid, nil, errors.New(`"key_ops" does not allow "verify"`)
		}
	}

	n, err := jwkInt(m, "n")
	if err != nil {
		return kid, nil, err
	}
	e, err := jwkInt(m, "e")
	if err != nil {
		return kid, nil, err
	}
	if bits := n.BitLen(); bits < minRSABits {
		return kid, nil, fmt.Errorf("RSA modulus is %d bits, at least %d are required", bits, minRSABits)
	} else if bits > maxRSABits {
		return kid, nil, fmt.Errorf("RSA modulus is %d bits, at most %d are supported", bits, maxRSABits)
	}
	if n.Bit(0) == 0 {
		return kid, nil, errors.New("RSA modulus is even, so not an RSA modulus")
	}
	// crypto/rsa refuses exponents outside this range at verification time;
	// refusing them here turns a per-request failure into a start-up error.
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return kid, nil, errors.New("RSA exponent must be odd and between 3 and 2^31-1")
	}
	return kid, &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// jwkString reads an optional string member.
func jwkString(m map[string]json.RawMessage, name string) (string, bool, error) {
	raw, ok := m[name]
	if !ok {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fmt.Errorf("%q must be a string", name)
	}
	return s, true, nil
}

// jwkInt reads a required base64url-encoded big-endian unsigned integer
// (RFC 7518 section 2, "Base64urlUInt").
func jwkInt(m map[string]json.RawMessage, name string) (*big.Int, error) {
	s, ok, err := jwkString(m, name)
	if err != nil {
		return nil, err
	}
	if !ok || s == "" {
		return nil, fmt.Errorf("%q is required", name)
	}
	// Padding is not part of base64url in JOSE, but some generators add it;
	// tolerating it costs nothing, while other alphabets are still refused.
	b, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%q is not valid base64url: %w", name, err)
	}
	return new(big.Int).SetBytes(b), nil
}
