package tools

import (
	"context"
	"fmt"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/snippets"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

const nameRules = "1 to 128 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"

// SnippetInfo describes a stored snippet without its content.
type SnippetInfo struct {
	Name         string    `json:"name"`
	ContentType  string    `json:"content_type"`
	Size         int64     `json:"size" jsonschema:"size of the content in bytes"`
	ETag         string    `json:"etag" jsonschema:"version tag; pass it as if_match to update or delete only this version"`
	LastModified time.Time `json:"last_modified"`
}

// SnippetContent is a snippet with its content.
type SnippetContent struct {
	SnippetInfo
	Content string `json:"content"`
}

// SnippetPage is one page of list_snippets.
type SnippetPage struct {
	Snippets   []SnippetInfo `json:"snippets"`
	NextCursor string        `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page; absent on the last page"`
}

// Deleted confirms delete_snippet.
type Deleted struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

func info(s snippets.Snippet) SnippetInfo {
	return SnippetInfo{Name: s.Name, ContentType: s.ContentType, Size: s.Size, ETag: s.ETag, LastModified: s.LastModified}
}

type saveArgs struct {
	Name        string `json:"name"`
	Content     string `json:"content"`
	ContentType string `json:"content_type"`
	IfMatch     string `json:"if_match"`
	CreateOnly  bool   `json:"create_only"`
}

func (t *toolset) saveSnippet() server.ServerTool {
	tool := mcp.NewTool("save_snippet",
		mcp.WithTitleAnnotation("Save a snippet"),
		mcp.WithDescription(fmt.Sprintf("Saves a named text snippet (up to %d KiB) in the user's private workspace, "+
			"creating it or replacing its content. Returns the new etag. To avoid overwriting someone else's change, "+
			"pass the etag you last read as if_match: the save then fails if the snippet changed meanwhile. "+
			"Set create_only to fail instead of replacing an existing snippet.", snippets.MaxContentBytes/1024)),
		mcp.WithString("name", mcp.Required(), mcp.MinLength(1), mcp.MaxLength(128),
			mcp.Pattern(`^[A-Za-z0-9][A-Za-z0-9._-]*$`),
			mcp.Description("Snippet name, "+nameRules+", e.g. \"meeting-notes.md\".")),
		mcp.WithString("content", mcp.Required(), mcp.Description("The full text to store (UTF-8).")),
		mcp.WithString("content_type", mcp.MaxLength(128),
			mcp.Description("Media type of the content, e.g. \"text/markdown\"; default \"text/plain; charset=utf-8\".")),
		mcp.WithString("if_match", mcp.MaxLength(128),
			mcp.Description("Only save if the snippet's current etag is this one (optimistic concurrency).")),
		mcp.WithBoolean("create_only", mcp.Description("Fail if a snippet with this name already exists.")),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[SnippetInfo](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "save_snippet", func(ctx context.Context, who auth.Identity, a saveArgs) (SnippetInfo, error) {
		if a.CreateOnly && a.IfMatch != "" {
			return SnippetInfo{}, fmt.Errorf("%w: use either if_match or create_only, not both", storage.ErrInvalid)
		}
		s, err := t.d.Snippets.Save(ctx, who.Owner(), a.Name, a.Content, snippets.SaveOptions{
			ContentType: a.ContentType, IfMatch: a.IfMatch, IfNoneMatch: a.CreateOnly,
		})
		return info(s), err
	})}
}

type nameArgs struct {
	Name string `json:"name"`
}

func (t *toolset) getSnippet() server.ServerTool {
	tool := mcp.NewTool("get_snippet",
		mcp.WithTitleAnnotation("Read a snippet"),
		mcp.WithDescription("Returns a snippet's content with its content type, size, last change time and etag "+
			"(use the etag as if_match when saving changes back)."),
		mcp.WithString("name", mcp.Required(), mcp.MinLength(1), mcp.MaxLength(128),
			mcp.Description("Snippet name, as given to save_snippet or returned by list_snippets.")),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[SnippetContent](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "get_snippet", func(ctx context.Context, who auth.Identity, a nameArgs) (SnippetContent, error) {
		s, err := t.d.Snippets.Get(ctx, who.Owner(), a.Name)
		return SnippetContent{SnippetInfo: info(s), Content: s.Content}, err
	})}
}

type listArgs struct {
	Prefix string `json:"prefix"`
	Limit  int    `json:"limit"`
	Cursor string `json:"cursor"`
}

func (t *toolset) listSnippets() server.ServerTool {
	tool := mcp.NewTool("list_snippets",
		mcp.WithTitleAnnotation("List snippets"),
		mcp.WithDescription("Lists the user's snippets in name order, without content, one page at a time. "+
			"If next_cursor is present, call again with it as cursor to get the next page."),
		mcp.WithString("prefix", mcp.MaxLength(128), mcp.Description("Only names starting with this text.")),
		mcp.WithInteger("limit", mcp.Min(1), mcp.Max(100), mcp.Description("Page size, 1 to 100; default 50.")),
		mcp.WithString("cursor", mcp.MaxLength(1024), mcp.Description("next_cursor from the previous page.")),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[SnippetPage](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "list_snippets", func(ctx context.Context, who auth.Identity, a listArgs) (SnippetPage, error) {
		p, err := t.d.Snippets.List(ctx, who.Owner(), snippets.ListOptions{Prefix: a.Prefix, Cursor: a.Cursor, Limit: a.Limit})
		if err != nil {
			return SnippetPage{}, err
		}
		out := SnippetPage{Snippets: make([]SnippetInfo, 0, len(p.Items)), NextCursor: p.NextCursor}
		for _, s := range p.Items {
			out.Snippets = append(out.Snippets, info(s))
		}
		return out, nil
	})}
}

type deleteArgs struct {
	Name    string `json:"name"`
	IfMatch string `json:"if_match"`
}

func (t *toolset) deleteSnippet() server.ServerTool {
	tool := mcp.NewTool("delete_snippet",
		mcp.WithTitleAnnotation("Delete a snippet"),
		mcp.WithDescription("Deletes a snippet permanently. Pass if_match with the etag you last read to delete "+
			"only that version."),
		mcp.WithString("name", mcp.Required(), mcp.MinLength(1), mcp.MaxLength(128), mcp.Description("Snippet name.")),
		mcp.WithString("if_match", mcp.MaxLength(128), mcp.Description("Only delete if the current etag is this one.")),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(false),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[Deleted](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "delete_snippet", func(ctx context.Context, who auth.Identity, a deleteArgs) (Deleted, error) {
		if err := t.d.Snippets.Delete(ctx, who.Owner(), a.Name, a.IfMatch); err != nil {
			return Deleted{}, err
		}
		return Deleted{Name: a.Name, Deleted: true}, nil
	})}
}
