package auth

import "errors"

// ErrInvalidToken matches every *TokenError, for callers that only need to
// know that a token was refused: errors.Is(err, auth.ErrInvalidToken).
var ErrInvalidToken = errors.New("invalid token")

// TokenError says why a token was refused. Reason is a fixed phrase chosen by
// this package, never text taken from the token, so it is safe to return to
// the client (it becomes the 401's error_description).
type TokenError struct {
	// Reason is a short, client-safe explanation, e.g. "token has expired".
	Reason string

	// cause is the underlying error for server-side diagnosis; it is kept out
	// of Error() because library messages may quote parts of the input.
	cause error
}

// Error returns "invalid token: <reason>".
func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

// Unwrap returns the underlying cause, if any.
func (e *TokenError) Unwrap() error { return e.cause }

// Is makes every TokenError match ErrInvalidToken.
func (e *TokenError) Is(target error) bool { return target == ErrInvalidToken }

func tokenError(reason string, cause error) *TokenError {
	return &TokenError{Reason: reason, cause: cause}
}
