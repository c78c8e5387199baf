package storage

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// Clients are the SDK clients for one storage account. They are safe for
// concurrent use and meant to be shared by the whole process.
type Clients struct {
	Blob  *azblob.Client
	Queue *azqueue.ServiceClient
}

// Retry and timeout budget. The SDK defaults (3 retries, delays growing to a
// minute, no per-try timeout, 30 s dials) let one tool call hang for minutes
// when storage is unreachable; a person waiting on a tool call is better
// served by an error within a few seconds that says to try again.
const (
	maxRetries    = 2
	tryTimeout    = 10 * time.Second
	retryDelay    = 200 * time.Millisecond
	maxRetryDelay = time.Second
	dialTimeout   = 3 * time.Second
)

// NewClients builds Blob and Queue clients for s: shared-key signing for
// connection strings, managed identity (optionally user-assigned) or
// DefaultAzureCredential for identity-based settings. It does not contact
// storage or the identity endpoint.
func NewClients(s Settings) (*Clients, error) {
	if s.BlobServiceURL == "" || s.QueueServiceURL == "" {
		return nil, errors.New("storage settings have no service URLs; build them with SettingsFromEnv")
	}
	opts := clientOptions()
	blobOpts := &azblob.ClientOptions{ClientOptions: opts}
	queueOpts := &azqueue.ClientOptions{ClientOptions: opts}
	// A trailing slash keeps the account segment of Azurite's path-style
	// URLs when the SDK joins container and queue names onto it.
	blobURL, queueURL := s.BlobServiceURL+"/", s.QueueServiceURL+"/"

	var c Clients
	switch s.Credential {
	case SharedKey:
		bk, err := azblob.NewSharedKeyCredential(s.AccountName, s.accountKey)
		if err != nil {
			return nil, errors.New("storage account key is not usable; check AccountKey in " + EnvConnection)
		}
		qk, err := azqueue.NewSharedKeyCredential(s.AccountName, s.accountKey)
		if err != nil {
			return nil, errors.New("storage account key is not usable; check AccountKey in " + EnvConnection)
		}
		if c.Blob, err = azblob.NewClientWithSharedKeyCredential(blobURL, bk, blobOpts); err != nil {
			return nil, fmt.Errorf("blob client: %w", err)
		}
		if c.Queue, err = azqueue.NewServiceClientWithSharedKeyCredential(queueURL, qk, queueOpts); err != nil {
			return nil, fmt.Errorf("queue client: %w", err)
		}
	case ManagedIdentity, DefaultCredential:
		cred, err := tokenCredential(s)
		if err != nil {
			return nil, err
		}
		if c.Blob, err = azblob.NewClient(blobURL, cred, blobOpts); err != nil {
			return nil, fmt.Errorf("blob client: %w", err)
		}
		if c.Queue, err = azqueue.NewServiceClient(queueURL, cred, queueOpts); err != nil {
			return nil, fmt.Errorf("queue client: %w", err)
		}
	default:
		return nil, errors.New("storage settings name no credential; build them with SettingsFromEnv")
	}
	return &c, nil
}

// tokenCredential builds the identity credential. Token endpoints are not
// storage, so they keep the SDK's default pipeline rather than the short
// storage retry budget.
func tokenCredential(s Settings) (azcore.TokenCredential, error) {
	if s.Credential == ManagedIdentity {
		mo := &azidentity.ManagedIdentityCredentialOptions{}
		if s.ClientID != "" {
			mo.ID = azidentity.ClientID(s.ClientID)
		}
		cred, err := azidentity.NewManagedIdentityCredential(mo)
		if err != nil {
			return nil, fmt.Errorf("managed identity credential: %w", err)
		}
		return cred, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("default Azure credential: %w", err)
	}
	return cred, nil
}

func clientOptions() azcore.ClientOptions {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	// Receive deletes messages and List reads queue properties in parallel;
	// the default of 2 idle connections per host would make every burst
	// open new ones.
	tr.MaxIdleConnsPerHost = 16
	return azcore.ClientOptions{
		Retry: policy.RetryOptions{
			MaxRetries:    maxRetries,
			TryTimeout:    tryTimeout,
			RetryDelay:    retryDelay,
			MaxRetryDelay: maxRetryDelay,
		},
		Transport: &http.Client{Transport: tr},
	}
}
