package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// responseError builds the error the SDK returns for a service answer,
// including a request URL that must not leak into messages.
func responseError(status int, code string) error {
	req, _ := http.NewRequest(http.MethodPut, "https://secretacct.blob.core.windows.net/snippets/owner/name?sig=abc", nil)
	resp := &http.Response{
		StatusCode: status,
		Status:     http.StatusText(status),
		Header:     http.Header{"X-Ms-Error-Code": {code}},
		Body:       io.NopCloser(strings.NewReader("<Error><Code>" + code + "</Code></Error>")),
		Request:    req,
	}
	return runtime.NewResponseError(resp)
}

func TestClassify(t *testing.T) {
	refused := dialClosedPort(t)
	tests := []struct {
		name string
		err  error
		kind error
		code string
	}{
		{"blob not found", responseError(404, "BlobNotFound"), ErrNotFound, "BlobNotFound"},
		{"queue not found", responseError(404, "QueueNotFound"), ErrNotFound, "QueueNotFound"},
		{"already exists", responseError(409, "BlobAlreadyExists"), ErrConflict, "BlobAlreadyExists"},
		{"condition not met", responseError(412, "ConditionNotMet"), ErrConflict, "ConditionNotMet"},
		{"body too large", responseError(413, "RequestBodyTooLarge"), ErrTooLarge, "RequestBodyTooLarge"},
		{"message too large is a 400", responseError(400, "MessageTooLarge"), ErrTooLarge, "MessageTooLarge"},
		{"bad marker", responseError(400, "InvalidQueryParameterValue"), ErrInvalid, "InvalidQueryParameterValue"},
		{"out of range", responseError(400, "OutOfRangeQueryParameterValue"), ErrInvalid, "OutOfRangeQueryParameterValue"},
		{"server busy", responseError(503, "ServerBusy"), ErrUnavailable, "ServerBusy"},
		{"internal error", responseError(500, "InternalError"), ErrUnavailable, "InternalError"},
		{"operation timed out", responseError(500, "OperationTimedOut"), ErrUnavailable, "OperationTimedOut"},
		{"throttled", responseError(429, ""), ErrUnavailable, ""},
		{"auth failed", responseError(403, "AuthenticationFailed"), ErrUnavailable, "AuthenticationFailed"},
		{"rbac missing", responseError(403, "AuthorizationPermissionMismatch"), ErrUnavailable, "AuthorizationPermissionMismatch"},
		{"response error wrapped", fmt.Errorf("saving: %w", responseError(404, "ContainerNotFound")), ErrNotFound, "ContainerNotFound"},
		{"connection refused", refused, ErrUnavailable, ""},
		{"bare errno", syscall.ECONNREFUSED, ErrUnavailable, ""},
		{"dns failure", &url.Error{Op: "Put", URL: "https://nosuch.blob.core.windows.net/x", Err: &net.DNSError{Err: "no such host", Name: "nosuch.blob.core.windows.net", IsNotFound: true}}, ErrUnavailable, ""},
		{"deadline", fmt.Errorf("try: %w", context.DeadlineExceeded), ErrUnavailable, ""},
		{"timeout net error", &url.Error{Op: "Get", URL: "https://x/y", Err: timeoutErr{}}, ErrUnavailable, ""},
		{"connection reset mid-body", io.ErrUnexpectedEOF, ErrUnavailable, ""},
		{"something else", errors.New("surprise"), ErrUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.err)
			if !errors.Is(got, tt.kind) {
				t.Fatalf("Classify(%v) = %v; want kind %v", tt.err, got, tt.kind)
			}
			for _, other := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrTooLarge, ErrUnavailable} {
				if other != tt.kind && errors.Is(got, other) {
					t.Errorf("Classify(...) also matches %v", other)
				}
			}
			if c := Code(got); c != tt.code {
				t.Errorf("Code = %q; want %q", c, tt.code)
			}
			msg := got.Error()
			for _, leak := range []string{"secretacct", "http", "sig=", "nosuch", "RESPONSE", "127.0.0.1"} {
				if strings.Contains(msg, leak) {
					t.Errorf("message %q contains %q", msg, leak)
				}
			}
			if msg == "" || len(msg) > 160 {
				t.Errorf("message %q should be one short sentence", msg)
			}
			var e *Error
			if errors.As(got, &e) && e.Cause() == nil {
				t.Errorf("the cause is not kept for logs")
			}
		})
	}
}

func TestClassifyPassThrough(t *testing.T) {
	if Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
	done := Errorf(ErrNotFound, "snippet %q does not exist", "x")
	if got := Classify(done); got != done {
		t.Errorf("an already classified error was changed: %v", got)
	}
	wrapped := fmt.Errorf("%w: name must be short", ErrInvalid)
	if got := Classify(wrapped); got != wrapped {
		t.Errorf("an error wrapping a kind was changed: %v", got)
	}
	got := Classify(&url.Error{Op: "Get", URL: "http://127.0.0.1:1/x", Err: context.Canceled})
	if !errors.Is(got, context.Canceled) || errors.Is(got, ErrUnavailable) {
		t.Errorf("cancellation = %v; want context.Canceled and no storage kind", got)
	}
	if strings.Contains(got.Error(), "127.0.0.1") {
		t.Errorf("cancellation message leaks the URL: %v", got)
	}
}

func TestReword(t *testing.T) {
	base := Classify(responseError(404, "BlobNotFound"))
	got := Reword(base, "snippet %q does not exist", "notes")
	if got.Error() != `snippet "notes" does not exist` || !errors.Is(got, ErrNotFound) || Code(got) != "BlobNotFound" {
		t.Errorf("Reword = %v (code %q)", got, Code(got))
	}
	if base.Error() == got.Error() {
		t.Error("Reword changed the original")
	}
	plain := errors.New("plain")
	if Reword(plain, "x") != plain {
		t.Error("Reword changed an unclassified error")
	}
}

func TestValidateOwner(t *testing.T) {
	const tid, oid = "72f988bf-86f1-41af-91ab-2d7cd011db47", "00000000-0000-0000-0000-00000000000a"
	good := []string{tid + "/" + oid, oid + "/" + tid}
	bad := []string{
		"", tid, tid + "/", "/" + oid, tid + "/" + oid + "/", tid + "//" + oid,
		strings.ToUpper(tid) + "/" + oid, "{" + tid[1:] + "/" + oid, tid + "/" + oid[:35] + "g",
		tid + "/" + strings.ReplaceAll(oid, "-", "0"), tid + "\\" + oid, "../../" + oid[6:] + "/" + tid,
		tid + "/" + oid + "x",
	}
	for _, o := range good {
		if err := ValidateOwner(o); err != nil {
			t.Errorf("ValidateOwner(%q) = %v", o, err)
		}
	}
	for _, o := range bad {
		err := ValidateOwner(o)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateOwner(%q) = %v; want ErrInvalid", o, err)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// dialClosedPort returns the error an HTTP request to a closed local port
// produces.
func dialClosedPort(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	resp, err := http.Get("http://" + addr + "/devstoreaccount1/snippets")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a request to the closed port %s succeeded", addr)
	}
	return err
}
