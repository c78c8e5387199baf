package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// The kinds of storage failure. Every error that Classify returns, and every
// error the snippets and queues packages return, matches exactly one of these
// with errors.Is (or is a context cancellation), so a caller can map them to
// a reply without looking at the message.
var (
	// ErrNotFound: the snippet, queue or message does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a precondition failed (the ETag no longer matches) or the
	// item already exists.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: an argument is malformed or out of range. The message says
	// which one and what is allowed.
	ErrInvalid = errors.New("invalid argument")
	// ErrTooLarge: content or a message is over its size limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: storage could not be reached, timed out, was busy,
	// failed on its side, or refused the server's own credentials. None of
	// these is the caller's fault; retrying later may help.
	ErrUnavailable = errors.New("storage unavailable")
)

// Error is a classified storage error. Its message is a short sentence meant
// for the person at the other end of a tool call: it never holds a storage
// URL, an account name or key, or the service's raw response, because
// azcore's own error text contains the request URL and headers.
type Error struct {
	// Kind is one of ErrNotFound, ErrConflict, ErrInvalid, ErrTooLarge or
	// ErrUnavailable.
	Kind error
	// Msg is the user-facing message.
	Msg string
	// Code is the storage service's error code (x-ms-error-code) when the
	// service answered, for example "BlobNotFound" or "ConditionNotMet".
	Code string
	// Status is the HTTP status the service answered with, or 0.
	Status int

	cause error
}

// Error returns the user-facing message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind, so errors.Is(err, ErrNotFound) and the like work.
// The raw cause is deliberately not in the chain: errors.As on it would let
// a caller print it, URL and all, by accident.
func (e *Error) Unwrap() error { return e.Kind }

// Cause returns the underlying SDK or network error, for server-side logs
// only: its text may contain storage URLs and request details.
func (e *Error) Cause() error { return e.cause }

// Errorf returns an *Error of the given kind whose message is the formatted
// text. %w verbs are not supported; use WithCause to keep a cause.
func Errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Reword returns a copy of a classified error with a more specific message,
// keeping its kind, code, status and cause. A caller that knows what was
// being done ("snippet \"x\" does not exist") uses it to replace the generic
// message Classify chose. Errors that are not *Error are returned unchanged.
func Reword(err error, format string, args ...any) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	c := *e
	c.Msg = fmt.Sprintf(format, args...)
	return &c
}

// Code returns the storage service's error code carried by err, or "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// Classify maps an error from the azblob or azqueue SDK, azidentity, or the
// network to one of the kinds above, with a message a person can act on. It
// returns nil for nil, returns an already classified error unchanged, and
// returns context.Canceled (wrapped) when the caller gave up, since that is
// neither the caller's mistake nor an outage.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var done *Error
	if errors.As(err, &done) {
		return err
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) ||
		errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnavailable) {
		return err
	}

	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return classifyResponse(re, err)
	}

	var authErr *azidentity.AuthenticationFailedError
	if errors.As(err, &authErr) {
		return &Error{Kind: ErrUnavailable, Msg: "the server could not sign in to storage; this is a server configuration problem, report it to the operator", cause: err}
	}

	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("the request was canceled before storage answered: %w", context.Canceled)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return &Error{Kind: ErrUnavailable, Msg: "storage did not answer in time; try again in a moment", cause: err}
	case isNetwork(err):
		return &Error{Kind: ErrUnavailable, Msg: "storage cannot be reached right now; try again in a moment", cause: err}
	}
	// Whatever is left (credential chains with nothing to offer, SDK-side
	// surprises) is not something the caller can fix by changing arguments.
	return &Error{Kind: ErrUnavailable, Msg: "the storage request failed unexpectedly; try again later, and report it if it keeps happening", cause: err}
}

func classifyResponse(re *azcore.ResponseError, err error) error {
	e := &Error{Code: re.ErrorCode, Status: re.StatusCode, cause: err}
	switch re.ErrorCode {
	case "RequestBodyTooLarge", "MessageTooLarge", "BlobTooLarge":
		// MessageTooLarge arrives as 400 and must not read as "invalid".
		e.Kind, e.Msg = ErrTooLarge, "the content is larger than storage accepts"
		return e
	case "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
		"InsufficientAccountPermissions", "AccountIsDisabled", "KeyBasedAuthenticationNotPermitted":
		e.Kind, e.Msg = ErrUnavailable, "storage refused the server's credentials; this is a server configuration problem, report it to the operator"
		return e
	}

	switch s := re.StatusCode; {
	case s == http.StatusNotFound:
		e.Kind, e.Msg = ErrNotFound, "the requested item does not exist"
	case s == http.StatusConflict, s == http.StatusPreconditionFailed:
		e.Kind, e.Msg = ErrConflict, "the item was changed or already exists; read it again and retry"
	case s == http.StatusRequestEntityTooLarge:
		e.Kind, e.Msg = ErrTooLarge, "the content is larger than storage accepts"
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		e.Kind, e.Msg = ErrUnavailable, "storage refused the server's credentials; this is a server configuration problem, report it to the operator"
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		e.Kind, e.Msg = ErrUnavailable, "storage is busy or failing right now; try again in a moment"
	case s >= 400:
		e.Kind = ErrInvalid
		if re.ErrorCode != "" {
			e.Msg = fmt.Sprintf("storage rejected the request as invalid (%s)", re.ErrorCode)
		} else {
			e.Msg = "storage rejected the request as invalid"
		}
	default:
		e.Kind, e.Msg = ErrUnavailable, "storage answered in an unexpected way; try again later"
	}
	return e
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isNetwork(err error) bool {
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
		urlErr *url.Error
		errno  syscall.Errno
	)
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &urlErr) ||
		errors.As(err, &errno) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed)
}

// QuoteRune shows a rejected character in an error message so that
// invisible and control characters are visible too.
func QuoteRune(r rune) string {
	switch {
	case r == ' ':
		return "a space"
	case r == '\'':
		return `"'"`
	case strconv.IsPrint(r):
		return "'" + string(r) + "'"
	}
	return strconv.QuoteRuneToASCII(r)
}
