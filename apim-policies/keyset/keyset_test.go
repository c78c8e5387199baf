package keyset_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/apim-policies/keyset"
	"github.com/mcp-apim/remote-mcp/handler/auth"
)

func TestCompleteGeneratesThenKeeps(t *testing.T) {
	first, added, err := keyset.Complete(rand.Reader, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != len(keyset.Names()) {
		t.Fatalf("added %v", added)
	}
	for _, n := range keyset.Names() {
		if first[n] == "" {
			t.Errorf("%s empty", n)
		}
	}
	again, added, err := keyset.Complete(rand.Reader, first)
	if err != nil || len(added) != 0 {
		t.Fatalf("second run: added %v, err %v", added, err)
	}
	for _, n := range keyset.Names() {
		if again[n] != first[n] {
			t.Errorf("%s changed on the second run", n)
		}
	}
	// Only the signing key kept: kid and JWKS are derived from it again.
	partial, added, err := keyset.Complete(rand.Reader, map[string]string{keyset.TokenSigningKey: first[keyset.TokenSigningKey]})
	if err != nil {
		t.Fatal(err)
	}
	if partial[keyset.TokenSigningKid] != first[keyset.TokenSigningKid] || partial[keyset.TokenJwks] != first[keyset.TokenJwks] {
		t.Fatalf("derived kid/JWKS differ: added %v", added)
	}
}

func TestCompleteRefusesInconsistentKeys(t *testing.T) {
	good, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		m[k] = v
		return m
	}
	cases := map[string]map[string]string{
		"kid of another key":  with(keyset.TokenSigningKid, other[keyset.TokenSigningKid]),
		"JWKS of another key": with(keyset.TokenJwks, other[keyset.TokenJwks]),
		"short browser key":   with(keyset.BrowserKey, base64.StdEncoding.EncodeToString([]byte("short"))),
		"internal not base64": with(keyset.InternalKey, "%%%"),
		"garbage signing key": with(keyset.TokenSigningKey, "<RSAKeyValue><Modulus>AQ==</Modulus></RSAKeyValue>"),
	}
	for name, have := range cases {
		if _, _, err := keyset.Complete(rand.Reader, have); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestSigningKeyWorksWithTheHandler signs a token with the generated key and
// has the handler's validator accept it through the generated JWKS.
func TestSigningKeyWorksWithTheHandler(t *testing.T) {
	set, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyset.ParseXMLPrivateKey(set[keyset.TokenSigningKey])
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseJWKS([]byte(set[keyset.TokenJwks]))
	if err != nil {
		t.Fatalf("handler refuses the JWKS: %v", err)
	}
	if kids := keys.Kids(); len(kids) != 1 || kids[0] != set[keyset.TokenSigningKid] {
		t.Fatalf("kids %v", kids)
	}
	if keyset.Thumbprint(&key.PublicKey) != set[keyset.TokenSigningKid] {
		t.Fatal("kid is not the thumbprint")
	}
}

// TestXMLKeyLoadsInDotNet signs with the key in Mono's RSA.FromXmlString, as
// an APIM policy expression does, and verifies the signature in Go.
func TestXMLKeyLoadsInDotNet(t *testing.T) {
	mcs, errC := exec.LookPath("mcs")
	mono, errM := exec.LookPath("mono")
	if errC != nil || errM != nil {
		if os.Getenv("MCP_REQUIRE_MONO") == "1" {
			t.Fatal("mono and mcs are required (MCP_REQUIRE_MONO=1): run scripts/mono.sh")
		}
		t.Skip("mono/mcs not installed (scripts/mono.sh installs them); skipping the .NET compatibility check")
	}
	set, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "sign.cs")
	const program = `using System; using System.Security.Cryptography; using System.Text;
class P { static void Main() {
  var rsa = RSA.Create(); rsa.FromXmlString(Console.In.ReadLine());
  var sig = rsa.SignData(Encoding.UTF8.GetBytes("header.payload"), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
  Console.Write(Convert.ToBase64String(sig)); } }`
	if err := os.WriteFile(src, []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "sign.exe")
	if out, err := exec.Command(mcs, "-nologo", "-out:"+exe, src).CombinedOutput(); err != nil {
		t.Fatalf("mcs: %v\n%s", err, out)
	}
	cmd := exec.Command(mono, exe)
	cmd.Stdin = strings.NewReader(set[keyset.TokenSigningKey] + "\n")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mono: %v\n%s", err, stderr.String())
	}
	sig, err := base64.StdEncoding.DecodeString(out.String())
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyset.ParseXMLPrivateKey(set[keyset.TokenSigningKey])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("header.payload"))
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("signature made by .NET does not verify: %v", err)
	}
}
