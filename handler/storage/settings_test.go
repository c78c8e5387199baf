package storage

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A real-looking key that must never show up in any output.
const testKey = "c2VjcmV0LWtleS1tdXN0LW5ldmVyLWxlYWstMDEyMzQ1Njc4OWFiY2RlZg=="

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestSettingsFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Settings
	}{
		{
			name: "development storage",
			env:  map[string]string{EnvConnection: "UseDevelopmentStorage=true"},
			want: Settings{BlobServiceURL: "http://127.0.0.1:10000/devstoreaccount1", QueueServiceURL: "http://127.0.0.1:10001/devstoreaccount1",
				AccountName: "devstoreaccount1", Credential: SharedKey, Development: true, accountKey: DevelopmentAccountKey},
		},
		{
			name: "development storage, any case, trailing semicolon",
			env:  map[string]string{EnvConnection: " usedevelopmentstorage=True; "},
			want: Settings{BlobServiceURL: "http://127.0.0.1:10000/devstoreaccount1", QueueServiceURL: "http://127.0.0.1:10001/devstoreaccount1",
				AccountName: "devstoreaccount1", Credential: SharedKey, Development: true, accountKey: DevelopmentAccountKey},
		},
		{
			name: "account connection string derives endpoints",
			env:  map[string]string{EnvConnection: "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=" + testKey + ";EndpointSuffix=core.windows.net"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1.queue.core.windows.net",
				AccountName: "acct1", Credential: SharedKey, accountKey: testKey},
		},
		{
			name: "sovereign cloud suffix and default protocol",
			env:  map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey + ";EndpointSuffix=core.chinacloudapi.cn"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.chinacloudapi.cn", QueueServiceURL: "https://acct1.queue.core.chinacloudapi.cn",
				AccountName: "acct1", Credential: SharedKey, accountKey: testKey},
		},
		{
			name: "explicit Azurite endpoints",
			env: map[string]string{EnvConnection: "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + DevelopmentAccountKey +
				";BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1/;QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1;"},
			want: Settings{BlobServiceURL: "http://127.0.0.1:41000/devstoreaccount1", QueueServiceURL: "http://127.0.0.1:41001/devstoreaccount1",
				AccountName: "devstoreaccount1", Credential: SharedKey, accountKey: DevelopmentAccountKey},
		},
		{
			name: "connection string wins over identity settings",
			env:  map[string]string{EnvConnection: "UseDevelopmentStorage=true", EnvAccountName: "acct1", EnvCredential: "managedidentity"},
			want: Settings{BlobServiceURL: "http://127.0.0.1:10000/devstoreaccount1", QueueServiceURL: "http://127.0.0.1:10001/devstoreaccount1",
				AccountName: "devstoreaccount1", Credential: SharedKey, Development: true, accountKey: DevelopmentAccountKey},
		},
		{
			name: "identity: account name, system-assigned managed identity",
			env:  map[string]string{EnvAccountName: "acct1", EnvCredential: "managedidentity"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1.queue.core.windows.net",
				AccountName: "acct1", Credential: ManagedIdentity},
		},
		{
			name: "identity: explicit URIs, user-assigned",
			env: map[string]string{EnvBlobServiceURI: "https://acct1.blob.core.windows.net/", EnvQueueServiceURI: "https://acct1.queue.core.windows.net",
				EnvCredential: "ManagedIdentity", EnvClientID: "00000000-1111-2222-3333-444444444444"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1.queue.core.windows.net",
				Credential: ManagedIdentity, ClientID: "00000000-1111-2222-3333-444444444444"},
		},
		{
			name: "identity: client id alone means managed identity",
			env:  map[string]string{EnvAccountName: "acct1", EnvClientID: "00000000-1111-2222-3333-44444444444A"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1.queue.core.windows.net",
				AccountName: "acct1", Credential: ManagedIdentity, ClientID: "00000000-1111-2222-3333-44444444444A"},
		},
		{
			name: "identity: no credential means the default chain",
			env:  map[string]string{EnvAccountName: "acct1"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1.queue.core.windows.net",
				AccountName: "acct1", Credential: DefaultCredential},
		},
		{
			name: "identity: explicit URI overrides the derived one",
			env:  map[string]string{EnvAccountName: "acct1", EnvQueueServiceURI: "https://acct1-secondary.queue.core.windows.net"},
			want: Settings{BlobServiceURL: "https://acct1.blob.core.windows.net", QueueServiceURL: "https://acct1-secondary.queue.core.windows.net",
				AccountName: "acct1", Credential: DefaultCredential},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SettingsFromEnv(env(tt.env))
			if err != nil {
				t.Fatalf("SettingsFromEnv: %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %s (key set: %v)\nwant %s (key set: %v)", got, got.accountKey != "", tt.want, tt.want.accountKey != "")
			}
			if got.accountKey != tt.want.accountKey {
				t.Errorf("account key differs from the expected one")
			}
		})
	}
}

func TestSettingsFromEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // a fragment of the error
	}{
		{"nothing set", nil, "storage is not configured"},
		{"blank connection string and nothing else", map[string]string{EnvConnection: "  "}, "storage is not configured"},
		{"development storage false", map[string]string{EnvConnection: "UseDevelopmentStorage=false"}, `UseDevelopmentStorage must be "true"`},
		{"development storage with proxy", map[string]string{EnvConnection: "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://x"}, "must stand alone"},
		{"no equals sign", map[string]string{EnvConnection: "AccountName=acct1;garbage;AccountKey=" + testKey}, "part 2 of the connection string has no '='"},
		{"bare key pasted", map[string]string{EnvConnection: testKey}, "not a known Key=Value pair"},
		{"unknown key", map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey + ";Foo=bar"}, `unknown connection string key "foo"`},
		{"duplicate key", map[string]string{EnvConnection: "AccountName=acct1;accountname=acct2;AccountKey=" + testKey}, "sets AccountName twice"},
		{"missing account name", map[string]string{EnvConnection: "AccountKey=" + testKey}, "AccountName is missing"},
		{"bad account name", map[string]string{EnvConnection: "AccountName=Acct_1;AccountKey=" + testKey}, "AccountName must be 3 to 24 lowercase letters and digits"},
		{"missing key", map[string]string{EnvConnection: "AccountName=acct1"}, "AccountKey is missing"},
		{"key not base64", map[string]string{EnvConnection: "AccountName=acct1;AccountKey=not*base64!"}, "AccountKey is not valid base64"},
		{"sas", map[string]string{EnvConnection: "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=2020&sig=abc"}, "SharedAccessSignature connection strings are not supported"},
		{"bad protocol", map[string]string{EnvConnection: "DefaultEndpointsProtocol=ftp;AccountName=acct1;AccountKey=" + testKey}, "DefaultEndpointsProtocol must be http or https"},
		{"bad suffix", map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey + ";EndpointSuffix=evil.com/x"}, "EndpointSuffix must be a DNS suffix"},
		{"relative blob endpoint", map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey + ";BlobEndpoint=/devstoreaccount1"}, "BlobEndpoint must be an absolute http(s) URL"},
		{"queue endpoint with query", map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey + ";QueueEndpoint=https://q.example?x=1"}, "QueueEndpoint must be an absolute http(s) URL"},
		{"credential without account", map[string]string{EnvCredential: "managedidentity"}, EnvCredential + " is set but no storage account is named"},
		{"client id without account", map[string]string{EnvClientID: "00000000-1111-2222-3333-444444444444"}, EnvClientID + " is set but no storage account is named"},
		{"blob URI only", map[string]string{EnvBlobServiceURI: "https://acct1.blob.core.windows.net"}, EnvQueueServiceURI + " is missing"},
		{"identity over http", map[string]string{EnvBlobServiceURI: "http://acct1.blob.core.windows.net", EnvQueueServiceURI: "https://acct1.queue.core.windows.net"}, EnvBlobServiceURI + " must use https"},
		{"bad identity account name", map[string]string{EnvAccountName: "ACCT"}, EnvAccountName + " must be 3 to 24"},
		{"unknown credential", map[string]string{EnvAccountName: "acct1", EnvCredential: "workloadidentity"}, EnvCredential + ` must be "managedidentity" or unset`},
		{"client id not a guid", map[string]string{EnvAccountName: "acct1", EnvCredential: "managedidentity", EnvClientID: "my-identity"}, EnvClientID + " must be the client id (a GUID)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SettingsFromEnv(env(tt.env))
			if err == nil {
				t.Fatalf("SettingsFromEnv succeeded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), testKey[:20]) {
				t.Errorf("error %q reveals the account key", err)
			}
		})
	}
}

// Settings end up in start-up logs and in structs printed while debugging;
// no formatting path may reveal the key.
func TestSettingsNeverPrintKey(t *testing.T) {
	s, err := SettingsFromEnv(env(map[string]string{EnvConnection: "AccountName=acct1;AccountKey=" + testKey}))
	if err != nil {
		t.Fatal(err)
	}
	type wrapper struct {
		Storage Settings
		Other   int
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("start", "storage", s)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("start", "storage", s)
	js, _ := json.Marshal(wrapper{Storage: s})
	outputs := []string{
		s.String(),
		fmt.Sprint(s), fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), fmt.Sprintf("%s", s), fmt.Sprintf("%q", s), fmt.Sprintf("%x", s),
		fmt.Sprintf("%+v", wrapper{Storage: s}), fmt.Sprintf("%#v", wrapper{Storage: s}), fmt.Sprintf("%v", &wrapper{Storage: s}),
		logged.String(), string(js),
	}
	for _, out := range outputs {
		if strings.Contains(out, testKey) || strings.Contains(out, testKey[:16]) || strings.Contains(out, fmt.Sprintf("%x", testKey[:8])) {
			t.Errorf("output reveals the key: %s", out)
		}
	}
	if !strings.Contains(s.String(), `shared key for account "acct1"`) || !strings.Contains(s.String(), "https://acct1.blob.core.windows.net") {
		t.Errorf("String() = %q; want the credential kind, account and endpoints", s.String())
	}
}
