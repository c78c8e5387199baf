// Package snippets stores users' text snippets in Azure Blob storage, one
// blob per snippet under a per-user prefix, with ETag-based optimistic
// concurrency and paged listing.
package snippets

import (
	"context"
	"errors"
	"io"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Limits.
const (
	// MaxContentBytes is the largest snippet, in UTF-8 bytes.
	MaxContentBytes = 256 * 1024
	// MaxNameLength is the longest snippet name, in characters.
	MaxNameLength = 128
	// MaxContentTypeLength is the longest content type, in characters.
	MaxContentTypeLength = 128
	// DefaultContentType is used when Save is given none.
	DefaultContentType = "text/plain; charset=utf-8"
	// DefaultListLimit is the page size when ListOptions.Limit is 0.
	DefaultListLimit = 50
	// MaxListLimit is the largest page size.
	MaxListLimit = 100
)

// Snippet is a stored snippet. List leaves Content empty.
type Snippet struct {
	Name         string
	Content      string
	ContentType  string
	ETag         string
	Size         int64
	LastModified time.Time
}

// SaveOptions are the optional parts of Save.
type SaveOptions struct {
	// ContentType is a MIME type; DefaultContentType when empty.
	ContentType string
	// IfMatch, when set, makes the save succeed only if the snippet still
	// has this ETag (quoted as returned, or bare). "*" means "exists".
	IfMatch string
	// IfNoneMatch makes the save create-only: it fails if the snippet
	// already exists.
	IfNoneMatch bool
}

// ListOptions select a page of List.
type ListOptions struct {
	// Prefix keeps only names that start with it; it may be empty.
	Prefix string
	// Cursor is Page.NextCursor from the previous call, or empty for the
	// first page. It is opaque.
	Cursor string
	// Limit is the most items to return, 1 to MaxListLimit; 0 means
	// DefaultListLimit. A page can hold fewer even when more follow.
	Limit int
}

// Page is one page of List.
type Page struct {
	Items []Snippet
	// NextCursor continues the listing; empty when there is nothing more.
	NextCursor string
}

// Store keeps snippets in one blob container. Each user's snippets live
// under the owner prefix given by the caller, which must come from the
// authenticated identity, never from tool arguments.
type Store struct {
	client    *azblob.Client
	container storage.Container
}

// New returns a Store for the named container. It does not contact storage.
func New(client *azblob.Client, container string) *Store {
	return &Store{client: client, container: storage.NewContainer(client, container, "snippet storage")}
}

// EnsureContainer creates the container if it does not exist yet.
func (s *Store) EnsureContainer(ctx context.Context) error {
	return s.container.Ensure(ctx)
}

// Save writes a snippet in a single request, so a save is all or nothing,
// and returns its new metadata (without content). With IfMatch or
// IfNoneMatch a concurrent change yields storage.ErrConflict.
func (s *Store) Save(ctx context.Context, owner, name, content string, opts SaveOptions) (Snippet, error) {
	if err := storage.ValidateOwner(owner); err != nil {
		return Snippet{}, err
	}
	if err := ValidateName(name); err != nil {
		return Snippet{}, err
	}
	if !utf8.ValidString(content) {
		return Snippet{}, storage.Errorf(storage.ErrInvalid, "content is not valid UTF-8 text")
	}
	if len(content) > MaxContentBytes {
		return Snippet{}, storage.Errorf(storage.ErrTooLarge, "content is %d bytes; the limit is %d bytes (256 KiB) of UTF-8 text", len(content), MaxContentBytes)
	}
	contentType, err := validateContentType(opts.ContentType)
	if err != nil {
		return Snippet{}, err
	}
	cond, err := conditions(opts.IfMatch, opts.IfNoneMatch)
	if err != nil {
		return Snippet{}, err
	}

	resp, err := s.container.Upload(ctx, owner+"/"+name, []byte(content), contentType, cond)
	if err != nil {
		return Snippet{}, s.saveError(err, name, opts)
	}
	return Snippet{
		Name:         name,
		ContentType:  contentType,
		ETag:         etagString(resp.ETag),
		Size:         int64(len(content)),
		LastModified: timeValue(resp.LastModified),
	}, nil
}

func (s *Store) saveError(err error, name string, opts SaveOptions) error {
	err = storage.Classify(err)
	switch {
	case errors.Is(err, storage.ErrConflict) && opts.IfNoneMatch:
		return storage.Reword(err, "snippet %q already exists; read it with get_snippet and save with its etag as if_match to replace it", name)
	case errors.Is(err, storage.ErrConflict):
		return storage.Reword(err, "snippet %q changed since you read it (or was deleted); read it again with get_snippet and retry with the new etag", name)
	case errors.Is(err, storage.ErrNotFound) && opts.IfMatch != "":
		return storage.Reword(err, "snippet %q does not exist, so if_match cannot match; save without if_match to create it", name)
	case errors.Is(err, storage.ErrTooLarge):
		return storage.Reword(err, "snippet %q is larger than storage accepts; the limit is %d bytes", name, MaxContentBytes)
	}
	return err
}

// Get returns a snippet with its content.
func (s *Store) Get(ctx context.Context, owner, name string) (Snippet, error) {
	if err := storage.ValidateOwner(owner); err != nil {
		return Snippet{}, err
	}
	if err := ValidateName(name); err != nil {
		return Snippet{}, err
	}
	resp, err := s.blob(owner, name).DownloadStream(ctx, nil)
	if err != nil {
		return Snippet{}, notFound(storage.Classify(err), name)
	}
	defer resp.Body.Close()
	// Snippets written through Save are at most MaxContentBytes; reading
	// one byte more catches any that were put there some other way,
	// without reading an unbounded body into memory.
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxContentBytes+1))
	if err != nil {
		return Snippet{}, storage.Classify(err)
	}
	if len(data) > MaxContentBytes {
		return Snippet{}, storage.Errorf(storage.ErrTooLarge, "snippet %q is larger than %d bytes and cannot be returned", name, MaxContentBytes)
	}
	sn := Snippet{
		Name:         name,
		Content:      string(data),
		ETag:         etagString(resp.ETag),
		Size:         int64(len(data)),
		LastModified: timeValue(resp.LastModified),
	}
	if resp.ContentType != nil {
		sn.ContentType = *resp.ContentType
	}
	return sn, nil
}

// List returns one page of the owner's snippets, in name order, without
// content.
func (s *Store) List(ctx context.Context, owner string, opts ListOptions) (Page, error) {
	if err := storage.ValidateOwner(owner); err != nil {
		return Page{}, err
	}
	if err := validatePrefix(opts.Prefix); err != nil {
		return Page{}, err
	}
	limit := opts.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return Page{}, storage.Errorf(storage.ErrInvalid, "limit must be between 1 and %d", MaxListLimit)
	}
	if len(opts.Cursor) > 1024 || strings.ContainsFunc(opts.Cursor, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return Page{}, storage.Errorf(storage.ErrInvalid, "cursor is not one this server returned; pass next_cursor from the previous page unchanged, or omit it to start over")
	}

	ownerPrefix := owner + "/"
	listOpts := &container.ListBlobsFlatOptions{
		Prefix:     ptr(ownerPrefix + opts.Prefix),
		MaxResults: ptr(int32(limit)),
	}
	if opts.Cursor != "" {
		listOpts.Marker = ptr(opts.Cursor)
	}
	pager := s.client.NewListBlobsFlatPager(s.container.Name(), listOpts)
	resp, err := pager.NextPage(ctx)
	if err != nil {
		err = storage.Classify(err)
		switch {
		case storage.Code(err) == string(bloberror.ContainerNotFound):
			return Page{Items: []Snippet{}}, nil
		case errors.Is(err, storage.ErrInvalid) && opts.Cursor != "":
			return Page{}, storage.Reword(err, "cursor is not one this server returned; pass next_cursor from the previous page unchanged, or omit it to start over")
		}
		return Page{}, err
	}

	page := Page{Items: []Snippet{}}
	if resp.Segment != nil {
		for _, item := range resp.Segment.BlobItems {
			if item == nil || item.Name == nil || !strings.HasPrefix(*item.Name, ownerPrefix) {
				continue
			}
			sn := Snippet{Name: strings.TrimPrefix(*item.Name, ownerPrefix)}
			if p := item.Properties; p != nil {
				sn.ETag = etagString(p.ETag)
				sn.LastModified = timeValue(p.LastModified)
				if p.ContentLength != nil {
					sn.Size = *p.ContentLength
				}
				if p.ContentType != nil {
					sn.ContentType = *p.ContentType
				}
			}
			page.Items = append(page.Items, sn)
		}
	}
	if resp.NextMarker != nil {
		page.NextCursor = *resp.NextMarker
	}
	return page, nil
}

// Delete removes a snippet. With a non-empty ifMatch it deletes only if the
// snippet still has that ETag.
func (s *Store) Delete(ctx context.Context, owner, name, ifMatch string) error {
	if err := storage.ValidateOwner(owner); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	cond, err := conditions(ifMatch, false)
	if err != nil {
		return err
	}
	_, err = s.blob(owner, name).Delete(ctx, &blob.DeleteOptions{AccessConditions: cond})
	if err != nil {
		err = storage.Classify(err)
		if errors.Is(err, storage.ErrConflict) {
			return storage.Reword(err, "snippet %q changed since you read it; read it again with get_snippet and retry with the new etag", name)
		}
		return notFound(err, name)
	}
	return nil
}

func (s *Store) blob(owner, name string) *blockblob.Client {
	return s.container.Blob(owner + "/" + name)
}

func notFound(err error, name string) error {
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Reword(err, "snippet %q does not exist", name)
	}
	return err
}

// conditions builds the access conditions for an If-Match ETag (quoted or
// bare) or a create-only save.
func conditions(ifMatch string, ifNoneMatch bool) (*blob.AccessConditions, error) {
	ifMatch = strings.TrimSpace(ifMatch)
	switch {
	case ifMatch != "" && ifNoneMatch:
		return nil, storage.Errorf(storage.ErrInvalid, "if_match and create-only cannot be used together")
	case ifNoneMatch:
		return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: ptr(azcore.ETagAny)}}, nil
	case ifMatch == "":
		return nil, nil
	}
	etag, err := normalizeETag(ifMatch)
	if err != nil {
		return nil, err
	}
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}, nil
}

// normalizeETag accepts an ETag as the service returns it ("0x8D...") or
// without its quotes, and returns the quoted form the service compares.
func normalizeETag(s string) (azcore.ETag, error) {
	if s == "*" {
		return azcore.ETagAny, nil
	}
	bare := s
	if len(bare) >= 2 && bare[0] == '"' && bare[len(bare)-1] == '"' {
		bare = bare[1 : len(bare)-1]
	}
	if bare == "" || len(bare) > 128 || strings.ContainsFunc(bare, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '"' }) {
		return "", storage.Errorf(storage.ErrInvalid, "if_match is not an etag; use the etag returned by get_snippet, save_snippet or list_snippets")
	}
	return azcore.ETag(`"` + bare + `"`), nil
}

// etagString returns the ETag in the quoted form the service uses, whatever
// form it arrived in, so callers always see one spelling.
func etagString(e *azcore.ETag) string {
	if e == nil || *e == "" {
		return ""
	}
	s := string(*e)
	if strings.HasPrefix(s, `"`) && strings.HasSuffix(s, `"`) && len(s) >= 2 {
		return s
	}
	return `"` + s + `"`
}

func validateContentType(ct string) (string, error) {
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return DefaultContentType, nil
	}
	if utf8.RuneCountInString(ct) > MaxContentTypeLength {
		return "", storage.Errorf(storage.ErrInvalid, "content_type must be at most %d characters", MaxContentTypeLength)
	}
	// Header values must be plain ASCII; ParseMediaType alone would accept
	// non-ASCII in quoted parameters, which the HTTP client then refuses.
	if strings.ContainsFunc(ct, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return "", storage.Errorf(storage.ErrInvalid, "content_type may contain only printable ASCII characters")
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return "", storage.Errorf(storage.ErrInvalid, "content_type is not a valid media type; use something like \"text/markdown; charset=utf-8\"")
	}
	return ct, nil
}

func timeValue(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func ptr[T any](v T) *T { return &v }
