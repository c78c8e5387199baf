package storage

import (
	"bytes"
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// Container is a blob container whose blobs are written whole, in one
// request each, so that a write is all or nothing.
type Container struct {
	client *azblob.Client
	name   string
	// what names the container's contents in errors ("snippet storage").
	what string
}

// NewContainer returns the container name of client; what names its
// contents in error messages.
func NewContainer(client *azblob.Client, name, what string) Container {
	return Container{client: client, name: name, what: what}
}

// Ensure creates the container if it does not exist yet.
func (c Container) Ensure(ctx context.Context) error {
	_, err := c.client.CreateContainer(ctx, c.name, nil)
	if bloberror.HasCode(err, bloberror.ContainerBeingDeleted) {
		// Azure keeps a deleted container's name for a while.
		return Errorf(ErrUnavailable, "%s is being reset; try again in a minute", c.what)
	}
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		err = Classify(err)
		return Reword(err, "could not prepare %s: %s", c.what, err)
	}
	return nil
}

// Blob is the block blob name in the container.
func (c Container) Blob(name string) *blockblob.Client {
	return c.client.ServiceClient().NewContainerClient(c.name).NewBlockBlobClient(name)
}

// Upload writes data as blob name in one request with the given access
// conditions. The container is made at start-up; if it was deleted since
// (or storage was reset), it is created again and the write retried once,
// which beats failing every write until a restart. The error is the
// service's, unclassified, so that callers can word conflicts themselves.
func (c Container) Upload(ctx context.Context, name string, data []byte, contentType string, cond *blob.AccessConditions) (blockblob.UploadResponse, error) {
	put := func() (blockblob.UploadResponse, error) {
		return c.Blob(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
			HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: &contentType},
			AccessConditions: cond,
		})
	}
	resp, err := put()
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		if err = c.Ensure(ctx); err == nil {
			resp, err = put()
		}
	}
	return resp, err
}

// Name is the container's name.
func (c Container) Name() string { return c.name }
