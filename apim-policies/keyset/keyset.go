// Package keyset generates the front door's keys (FRONTDOOR.md, "Keys"):
// the RS256 token signing key with its key id and public JWKS, and the HMAC
// keys of the browser cookies and of the internal API. Keys are generated
// once and then kept: a new signing key would sign every user out.
package keyset

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
)

// Names of the keys, as named values (APIM), Key Vault secrets and app
// settings call them.
const (
	TokenSigningKey = "TokenSigningKey"
	TokenSigningKid = "TokenSigningKid"
	TokenJwks       = "TokenJwks"
	// TokenJwkN and TokenJwkE are the public key's modulus and exponent
	// (base64url): validate-jwt takes an RSA key only as literal n and e.
	TokenJwkN   = "TokenJwkN"
	TokenJwkE   = "TokenJwkE"
	BrowserKey  = "BrowserKey"
	InternalKey = "InternalKey"
)

// Names lists every key, in the order they are generated.
func Names() []string {
	return []string{TokenSigningKey, TokenSigningKid, TokenJwks, TokenJwkN, TokenJwkE, BrowserKey, InternalKey}
}

// RSABits is the size of the signing key.
const RSABits = 2048

// Complete returns have with every missing key generated from random. Keys
// already present are kept byte for byte; the kid and JWKS are derived from
// the signing key, so they always match it. added lists what was generated.
func Complete(random io.Reader, have map[string]string) (out map[string]string, added []string, err error) {
	out = make(map[string]string, len(Names()))
	for k, v := range have {
		out[k] = v
	}
	var key *rsa.PrivateKey
	if x := out[TokenSigningKey]; x != "" {
		key, err = ParseXMLPrivateKey(x)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", TokenSigningKey, err)
		}
	} else {
		key, err = rsa.GenerateKey(random, RSABits)
		if err != nil {
			return nil, nil, fmt.Errorf("generating the signing key: %w", err)
		}
		out[TokenSigningKey] = XMLPrivateKey(key)
		added = append(added, TokenSigningKey)
	}
	kid := Thumbprint(&key.PublicKey)
	if out[TokenSigningKid] != kid {
		if out[TokenSigningKid] != "" {
			return nil, nil, fmt.Errorf("%s %q does not belong to %s (its thumbprint is %q)", TokenSigningKid, out[TokenSigningKid], TokenSigningKey, kid)
		}
		out[TokenSigningKid] = kid
		added = append(added, TokenSigningKid)
	}
	if out[TokenJwks] == "" {
		jwks, err := JWKS(&key.PublicKey, kid)
		if err != nil {
			return nil, nil, err
		}
		out[TokenJwks] = jwks
		added = append(added, TokenJwks)
	} else if err := jwksHasKid(out[TokenJwks], kid); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", TokenJwks, err)
	}
	for name, want := range map[string]string{
		TokenJwkN: b64url(key.N.Bytes()),
		TokenJwkE: b64url(big.NewInt(int64(key.E)).Bytes()),
	} {
		switch out[name] {
		case want:
		case "":
			out[name] = want
			added = append(added, name)
		default:
			return nil, nil, fmt.Errorf("%s does not belong to %s", name, TokenSigningKey)
		}
	}
	for _, name := range []string{BrowserKey, InternalKey} {
		if out[name] != "" {
			if b, err := base64.StdEncoding.DecodeString(out[name]); err != nil || len(b) < 32 {
				return nil, nil, fmt.Errorf("%s must be at least 32 random bytes in base64", name)
			}
			continue
		}
		b := make([]byte, 32)
		if _, err := io.ReadFull(random, b); err != nil {
			return nil, nil, fmt.Errorf("generating %s: %w", name, err)
		}
		out[name] = base64.StdEncoding.EncodeToString(b)
		added = append(added, name)
	}
	return out, added, nil
}

// Generate makes a complete new set.
func Generate() (map[string]string, error) {
	out, _, err := Complete(rand.Reader, nil)
	return out, err
}

// rsaKeyValue is .NET's XML form of an RSA key, what RSA.FromXmlString reads
// in APIM policy expressions.
type rsaKeyValue struct {
	XMLName  xml.Name `xml:"RSAKeyValue"`
	Modulus  string   `xml:"Modulus"`
	Exponent string   `xml:"Exponent"`
	P        string   `xml:"P"`
	Q        string   `xml:"Q"`
	DP       string   `xml:"DP"`
	DQ       string   `xml:"DQ"`
	InverseQ string   `xml:"InverseQ"`
	D        string   `xml:"D"`
}

// .NET wants every CRT parameter as long as half the modulus, and D as long
// as the modulus, left-padded with zeros.
func fixed(n *big.Int, size int) string {
	return base64.StdEncoding.EncodeToString(n.FillBytes(make([]byte, size)))
}

// XMLPrivateKey renders key as <RSAKeyValue> for RSA.FromXmlString.
func XMLPrivateKey(key *rsa.PrivateKey) string {
	key.Precompute()
	size := key.Size()
	half := (size + 1) / 2
	v := rsaKeyValue{
		Modulus:  fixed(key.N, size),
		Exponent: base64.StdEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		P:        fixed(key.Primes[0], half),
		Q:        fixed(key.Primes[1], half),
		DP:       fixed(key.Precomputed.Dp, half),
		DQ:       fixed(key.Precomputed.Dq, half),
		InverseQ: fixed(key.Precomputed.Qinv, half),
		D:        fixed(key.D, size),
	}
	b, _ := xml.Marshal(v) // only strings: cannot fail
	return string(b)
}

// ParseXMLPrivateKey reads an <RSAKeyValue> private key and checks it.
func ParseXMLPrivateKey(s string) (*rsa.PrivateKey, error) {
	var v rsaKeyValue
	if err := xml.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("not an <RSAKeyValue> document: %w", err)
	}
	num := func(name, b64 string) (*big.Int, error) {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("<%s> is missing or not base64", name)
		}
		return new(big.Int).SetBytes(b), nil
	}
	var err error
	key := &rsa.PrivateKey{}
	var e, p, q *big.Int
	if key.N, err = num("Modulus", v.Modulus); err != nil {
		return nil, err
	}
	if e, err = num("Exponent", v.Exponent); err != nil {
		return nil, err
	}
	if key.D, err = num("D", v.D); err != nil {
		return nil, err
	}
	if p, err = num("P", v.P); err != nil {
		return nil, err
	}
	if q, err = num("Q", v.Q); err != nil {
		return nil, err
	}
	if !e.IsInt64() || e.Int64() > 1<<31-1 {
		return nil, errors.New("exponent out of range")
	}
	key.E = int(e.Int64())
	key.Primes = []*big.Int{p, q}
	if err := key.Validate(); err != nil {
		return nil, fmt.Errorf("inconsistent key: %w", err)
	}
	if key.N.BitLen() < RSABits {
		return nil, fmt.Errorf("key has %d bits; at least %d are needed", key.N.BitLen(), RSABits)
	}
	key.Precompute()
	return key, nil
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Thumbprint is the RFC 7638 JWK thumbprint of pub, used as its kid.
func Thumbprint(pub *rsa.PublicKey) string {
	// Members in lexicographic order, no whitespace (RFC 7638 section 3).
	canon := `{"e":"` + b64url(big.NewInt(int64(pub.E)).Bytes()) + `","kty":"RSA","n":"` + b64url(pub.N.Bytes()) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64url(sum[:])
}

type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// JWKS renders the public key set the handler and /.well-known/jwks.json use.
func JWKS(pub *rsa.PublicKey, kid string) (string, error) {
	b, err := json.Marshal(struct {
		Keys []jwk `json:"keys"`
	}{[]jwk{{Kty: "RSA", Use: "sig", Alg: "RS256", Kid: kid, N: b64url(pub.N.Bytes()), E: b64url(big.NewInt(int64(pub.E)).Bytes())}}})
	return string(b), err
}

func jwksHasKid(jwks, kid string) error {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks), &set); err != nil {
		return fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if !slices.ContainsFunc(set.Keys, func(k jwk) bool { return k.Kid == kid }) {
		return fmt.Errorf("does not contain the signing key %q", kid)
	}
	return nil
}
