package storage

import (
	"strings"
	"testing"
)

func TestNewClients(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		blob, que string
	}{
		{"development storage", map[string]string{EnvConnection: "UseDevelopmentStorage=true"},
			"http://127.0.0.1:10000/devstoreaccount1/", "http://127.0.0.1:10001/devstoreaccount1/"},
		{"managed identity", map[string]string{EnvAccountName: "acct1", EnvCredential: "managedidentity", EnvClientID: "00000000-1111-2222-3333-444444444444"},
			"https://acct1.blob.core.windows.net/", "https://acct1.queue.core.windows.net/"},
		{"default credential", map[string]string{EnvAccountName: "acct1"},
			"https://acct1.blob.core.windows.net/", "https://acct1.queue.core.windows.net/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SettingsFromEnv(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewClients(s)
			if err != nil {
				t.Fatalf("NewClients: %v", err)
			}
			if c.Blob.URL() != tt.blob || c.Queue.URL() != tt.que {
				t.Errorf("URLs = %s, %s; want %s, %s", c.Blob.URL(), c.Queue.URL(), tt.blob, tt.que)
			}
		})
	}
}

func TestNewClientsRejectsZeroSettings(t *testing.T) {
	_, err := NewClients(Settings{})
	if err == nil || !strings.Contains(err.Error(), "SettingsFromEnv") {
		t.Errorf("NewClients(Settings{}) = %v; want an error pointing at SettingsFromEnv", err)
	}
}
