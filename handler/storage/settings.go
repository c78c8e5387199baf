// Package storage connects the handler to Azure Blob and Queue storage: it
// reads the Functions-host style settings (AzureWebJobsStorage and its
// identity-based variant), builds SDK clients with retry limits suited to an
// interactive tool call, and turns SDK and network failures into a small set
// of error kinds with messages that are safe to show to a user.
package storage

import (
	"github.com/mcp-apim/remote-mcp/handler/guid"

	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
)

// Well-known Azurite (development storage) account. The key is public and
// documented; it is not a secret.
const (
	DevelopmentAccountName = "devstoreaccount1"
	DevelopmentAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	developmentBlobURL     = "http://127.0.0.1:10000/" + DevelopmentAccountName
	developmentQueueURL    = "http://127.0.0.1:10001/" + DevelopmentAccountName
)

// Names of the settings read by SettingsFromEnv. They are the Functions
// host's own, so one app setting configures both the host and the handler.
const (
	EnvConnection      = "AzureWebJobsStorage"
	EnvAccountName     = "AzureWebJobsStorage__accountName"
	EnvBlobServiceURI  = "AzureWebJobsStorage__blobServiceUri"
	EnvQueueServiceURI = "AzureWebJobsStorage__queueServiceUri"
	EnvCredential      = "AzureWebJobsStorage__credential"
	EnvClientID        = "AzureWebJobsStorage__clientId"
)

// CredentialKind says how the handler authenticates to storage.
type CredentialKind int

const (
	// SharedKey signs requests with the account key from a connection
	// string (Azurite, or an account that still allows shared keys).
	SharedKey CredentialKind = iota + 1
	// ManagedIdentity uses the Function App's managed identity: the
	// system-assigned one, or the user-assigned one named by ClientID.
	ManagedIdentity
	// DefaultCredential uses azidentity's DefaultAzureCredential chain
	// (environment, workload identity, managed identity, Azure CLI, ...),
	// which is what identity-based settings without a credential mean when
	// run on a developer machine.
	DefaultCredential
)

// String names the credential kind.
func (k CredentialKind) String() string {
	switch k {
	case SharedKey:
		return "shared key"
	case ManagedIdentity:
		return "managed identity"
	case DefaultCredential:
		return "default Azure credential"
	}
	return fmt.Sprintf("CredentialKind(%d)", int(k))
}

// Settings says where Blob and Queue storage are and how to authenticate.
// Build it with SettingsFromEnv. Its formatted forms (String, %v, %+v, %#v,
// slog) never show the account key.
type Settings struct {
	// BlobServiceURL is the Blob service endpoint without a trailing slash,
	// e.g. https://acct.blob.core.windows.net or, for Azurite,
	// http://127.0.0.1:10000/devstoreaccount1.
	BlobServiceURL string
	// QueueServiceURL is the Queue service endpoint, likewise.
	QueueServiceURL string
	// AccountName is the storage account's name; it may be empty for
	// identity-based settings that give explicit service URIs.
	AccountName string
	// Credential says how requests are authenticated.
	Credential CredentialKind
	// ClientID is the client id of a user-assigned managed identity, or
	// empty for the system-assigned one.
	ClientID string
	// Development is true for UseDevelopmentStorage=true.
	Development bool

	// accountKey is unexported so that reflection-based encoders (JSON,
	// slog's JSON handler) skip it; Format covers fmt.
	accountKey string
}

// String describes the settings for a start-up log line, without the key.
func (s Settings) String() string {
	var b strings.Builder
	b.WriteString(s.Credential.String())
	if s.AccountName != "" {
		fmt.Fprintf(&b, " for account %q", s.AccountName)
	}
	if s.ClientID != "" {
		fmt.Fprintf(&b, " (client id %s)", s.ClientID)
	}
	if s.Development {
		b.WriteString(" (development storage)")
	}
	fmt.Fprintf(&b, "; blob %s; queue %s", s.BlobServiceURL, s.QueueServiceURL)
	return b.String()
}

// Format prints String for every verb, so that printing a struct that holds
// Settings with %+v or %#v cannot reveal the key.
func (s Settings) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// LogValue makes slog print String.
func (s Settings) LogValue() slog.Value { return slog.StringValue(s.String()) }

// SettingsFromEnv reads storage settings through getenv (os.Getenv in
// production, a map in tests).
//
// AzureWebJobsStorage, when set, is a connection string and wins, as it does
// for the Functions host: either UseDevelopmentStorage=true (Azurite on
// 127.0.0.1:10000 and 10001) or an explicit one with AccountName and
// AccountKey, plus optional BlobEndpoint, QueueEndpoint,
// DefaultEndpointsProtocol and EndpointSuffix. Otherwise the identity-based
// form is read: AzureWebJobsStorage__blobServiceUri and __queueServiceUri,
// or __accountName to derive both, with __credential=managedidentity and an
// optional __clientId for a user-assigned identity. A __clientId alone also
// means managed identity; with neither, DefaultAzureCredential is used.
//
// Errors name the setting at fault and never repeat a key.
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	if cs := strings.TrimSpace(getenv(EnvConnection)); cs != "" {
		return parseConnectionString(cs)
	}
	return identitySettings(getenv)
}

func parseConnectionString(cs string) (Settings, error) {
	fail := func(format string, args ...any) (Settings, error) {
		return Settings{}, fmt.Errorf(EnvConnection+": "+format, args...)
	}
	kv := map[string]string{}
	for i, part := range strings.Split(cs, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			// Do not echo the part: it may be a key with a lost "AccountKey=".
			return fail("part %d of the connection string has no '='; expected Key=Value pairs separated by ';'", i+1)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := kv[k]; dup {
			return fail("the connection string sets %s twice", canonicalKey(k))
		}
		kv[k] = strings.TrimSpace(v)
	}

	if v, ok := kv["usedevelopmentstorage"]; ok {
		if !strings.EqualFold(v, "true") {
			return fail("UseDevelopmentStorage must be \"true\" when present")
		}
		if len(kv) != 1 {
			return fail("UseDevelopmentStorage=true must stand alone; to point at another Azurite, give AccountName, AccountKey, BlobEndpoint and QueueEndpoint instead")
		}
		return Settings{
			BlobServiceURL:  developmentBlobURL,
			QueueServiceURL: developmentQueueURL,
			AccountName:     DevelopmentAccountName,
			Credential:      SharedKey,
			Development:     true,
			accountKey:      DevelopmentAccountKey,
		}, nil
	}

	for k := range kv {
		switch k {
		case "defaultendpointsprotocol", "accountname", "accountkey", "endpointsuffix",
			"blobendpoint", "queueendpoint", "tableendpoint", "fileendpoint":
		case "sharedaccesssignature":
			return fail("SharedAccessSignature connection strings are not supported; use AccountName and AccountKey, or identity-based settings (%s)", EnvAccountName)
		default:
			if isWord(k) {
				return fail("unknown connection string key %q", k)
			}
			// Not echoed: a pasted bare key also parses as "something=".
			return fail("the connection string has a part that is not a known Key=Value pair")
		}
	}

	s := Settings{Credential: SharedKey}
	s.AccountName = kv["accountname"]
	if s.AccountName == "" {
		return fail("AccountName is missing")
	}
	if err := validateAccountName(s.AccountName); err != nil {
		return fail("AccountName %w", err)
	}
	s.accountKey = kv["accountkey"]
	if s.accountKey == "" {
		return fail("AccountKey is missing")
	}
	if _, err := base64.StdEncoding.DecodeString(s.accountKey); err != nil {
		return fail("AccountKey is not valid base64 (check that it was copied whole)")
	}

	protocol := strings.ToLower(kv["defaultendpointsprotocol"])
	switch protocol {
	case "":
		protocol = "https"
	case "http", "https":
	default:
		return fail("DefaultEndpointsProtocol must be http or https")
	}
	suffix := kv["endpointsuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	} else if strings.ContainsAny(suffix, "/:?#@ ") {
		return fail("EndpointSuffix must be a DNS suffix such as core.windows.net")
	}

	var err error
	if s.BlobServiceURL, err = endpoint("BlobEndpoint", kv["blobendpoint"], protocol+"://"+s.AccountName+".blob."+suffix, false); err != nil {
		return fail("%w", err)
	}
	if s.QueueServiceURL, err = endpoint("QueueEndpoint", kv["queueendpoint"], protocol+"://"+s.AccountName+".queue."+suffix, false); err != nil {
		return fail("%w", err)
	}
	return s, nil
}

func identitySettings(getenv func(string) string) (Settings, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	name, blob, queue := get(EnvAccountName), get(EnvBlobServiceURI), get(EnvQueueServiceURI)
	cred, clientID := get(EnvCredential), get(EnvClientID)

	if name == "" && blob == "" && queue == "" {
		if cred != "" || clientID != "" {
			return Settings{}, fmt.Errorf("%s is set but no storage account is named: set %s, or %s and %s", pick(cred != "", EnvCredential, EnvClientID), EnvAccountName, EnvBlobServiceURI, EnvQueueServiceURI)
		}
		return Settings{}, fmt.Errorf("storage is not configured: set %s to a connection string (UseDevelopmentStorage=true for Azurite), or %s (or %s and %s) for identity-based access",
			EnvConnection, EnvAccountName, EnvBlobServiceURI, EnvQueueServiceURI)
	}

	s := Settings{AccountName: name}
	if name != "" {
		if err := validateAccountName(name); err != nil {
			return Settings{}, fmt.Errorf("%s %w", EnvAccountName, err)
		}
	}
	var err error
	derive := func(service string) string {
		if name == "" {
			return ""
		}
		return "https://" + name + "." + service + ".core.windows.net"
	}
	if s.BlobServiceURL, err = endpoint(EnvBlobServiceURI, blob, derive("blob"), true); err != nil {
		return Settings{}, err
	}
	if s.QueueServiceURL, err = endpoint(EnvQueueServiceURI, queue, derive("queue"), true); err != nil {
		return Settings{}, err
	}

	switch {
	case strings.EqualFold(cred, "managedidentity"):
		s.Credential = ManagedIdentity
	case cred == "" && clientID != "":
		// A client id only ever names a managed identity.
		s.Credential = ManagedIdentity
	case cred == "":
		s.Credential = DefaultCredential
	default:
		return Settings{}, fmt.Errorf("%s must be \"managedidentity\" or unset", EnvCredential)
	}
	if clientID != "" {
		if !guid.Valid(clientID) {
			return Settings{}, fmt.Errorf("%s must be the client id (a GUID) of a user-assigned managed identity", EnvClientID)
		}
		s.ClientID = clientID
	}
	return s, nil
}

// endpoint validates an explicit service URL, or falls back to the derived
// one. The value is not echoed in errors: operators see the setting's name,
// which is enough to find it.
func endpoint(setting, explicit, derived string, httpsOnly bool) (string, error) {
	raw := explicit
	if raw == "" {
		raw = derived
	}
	if raw == "" {
		return "", fmt.Errorf("%s is missing (or set %s to derive it)", setting, EnvAccountName)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%s must be an absolute http(s) URL without query or credentials, like https://<account>.blob.core.windows.net", setting)
	}
	if httpsOnly && u.Scheme != "https" {
		// azcore refuses to send bearer tokens over plain http.
		return "", fmt.Errorf("%s must use https for identity-based access", setting)
	}
	return strings.TrimRight(raw, "/"), nil
}

func validateAccountName(name string) error {
	if len(name) < 3 || len(name) > 24 {
		return errors.New("must be 3 to 24 lowercase letters and digits")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return errors.New("must be 3 to 24 lowercase letters and digits")
		}
	}
	return nil
}

func canonicalKey(lower string) string {
	for _, k := range []string{"DefaultEndpointsProtocol", "AccountName", "AccountKey", "EndpointSuffix",
		"BlobEndpoint", "QueueEndpoint", "TableEndpoint", "FileEndpoint", "SharedAccessSignature", "UseDevelopmentStorage"} {
		if strings.EqualFold(k, lower) {
			return k
		}
	}
	return fmt.Sprintf("%q", lower)
}

// isWord reports whether s looks like a setting name (short, letters only).
func isWord(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}
