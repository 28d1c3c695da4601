package api

import (
	"errors"
	"fmt"
	"time"
)

// Error codes of the API's one error shape. They are stable: clients
// branch on them (through the sentinels below), never on messages.
const (
	CodeBadRequest     = "bad_request"
	CodeTooLarge       = "too_large"
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeNotLeader      = "not_leader"
	CodeNoLeader       = "no_leader"
	CodeUnknownOutcome = "unknown_outcome"
	CodeTimeout        = "timeout"
	CodeInternal       = "internal"
	CodeShutdown       = "shutting_down"
	CodeTooMany        = "too_many_requests"
	CodeRedirect       = "redirect"
	// CodeTokenRefused refuses a bearer token that does not verify (the
	// message says why: expired, revoked, wrong audience, ...).
	CodeTokenRefused = "token_refused"
	// CodeInvalidPolicy refuses a policy set that does not parse or
	// validate; the message is the parser's, with its position.
	CodeInvalidPolicy = "invalid_policy"
	// CodeNodeRevoked, CodeCertRevoked and CodeKeyRevoked refuse callers
	// whose node, certificate (or a certificate it chains through) or key
	// is revoked; agents stop retrying on them.
	CodeNodeRevoked = "node_revoked"
	CodeCertRevoked = "cert_revoked"
	CodeKeyRevoked  = "key_revoked"
	// CodeEscalation refuses a caller that would hand out or take away a
	// principal that may do more than it may itself.
	CodeEscalation = "escalation_refused"
	// Rejections of the replicated state machine (fsm.ErrorCode).
	CodeExists          = "exists"
	CodeInvalid         = "invalid"
	CodeVersion         = "version"
	CodeLimit           = "limit"
	CodeTokenNotFound   = "token_not_found"
	CodeTokenExpired    = "token_expired"
	CodeTokenExhausted  = "token_exhausted"
	CodeTokenRevoked    = "token_revoked"
	CodeTokenConstraint = "token_constraint"
)

// Sentinels, one per code: errors.Is(err, ErrX) holds for an *APIError
// with that code.
var (
	ErrBadRequest      = errors.New("api: bad request")
	ErrTooLarge        = errors.New("api: request too large")
	ErrUnauthorized    = errors.New("api: no credential")
	ErrForbidden       = errors.New("api: forbidden")
	ErrNotFound        = errors.New("api: not found")
	ErrConflict        = errors.New("api: conflict")
	ErrNotLeader       = errors.New("api: not the leader")
	ErrNoLeader        = errors.New("api: no leader")
	ErrUnknownOutcome  = errors.New("api: outcome unknown")
	ErrTimeout         = errors.New("api: timed out")
	ErrInternal        = errors.New("api: internal error")
	ErrShutdown        = errors.New("api: server shutting down")
	ErrTooMany         = errors.New("api: too many requests")
	ErrRedirect        = errors.New("api: served elsewhere")
	ErrTokenRefused    = errors.New("api: bearer token refused")
	ErrInvalidPolicy   = errors.New("api: invalid policy set")
	ErrNodeRevoked     = errors.New("api: node revoked")
	ErrCertRevoked     = errors.New("api: certificate revoked")
	ErrKeyRevoked      = errors.New("api: key revoked")
	ErrEscalation      = errors.New("api: escalation refused")
	ErrExists          = errors.New("api: already exists")
	ErrInvalid         = errors.New("api: invalid command")
	ErrVersion         = errors.New("api: command version newer than the server")
	ErrLimit           = errors.New("api: limit reached")
	ErrTokenNotFound   = errors.New("api: join token not found")
	ErrTokenExpired    = errors.New("api: join token expired")
	ErrTokenExhausted  = errors.New("api: join token used up")
	ErrTokenRevoked    = errors.New("api: join token revoked")
	ErrTokenConstraint = errors.New("api: join token not valid for this use")
)

var sentinels = map[string]error{
	CodeBadRequest: ErrBadRequest, CodeTooLarge: ErrTooLarge, CodeUnauthorized: ErrUnauthorized,
	CodeForbidden: ErrForbidden, CodeNotFound: ErrNotFound, CodeConflict: ErrConflict,
	CodeNotLeader: ErrNotLeader, CodeNoLeader: ErrNoLeader, CodeUnknownOutcome: ErrUnknownOutcome,
	CodeTimeout: ErrTimeout, CodeInternal: ErrInternal, CodeShutdown: ErrShutdown, CodeTooMany: ErrTooMany,
	CodeRedirect: ErrRedirect, CodeTokenRefused: ErrTokenRefused, CodeInvalidPolicy: ErrInvalidPolicy, CodeNodeRevoked: ErrNodeRevoked, CodeCertRevoked: ErrCertRevoked,
	CodeKeyRevoked: ErrKeyRevoked, CodeEscalation: ErrEscalation, CodeExists: ErrExists, CodeInvalid: ErrInvalid,
	CodeVersion: ErrVersion, CodeLimit: ErrLimit, CodeTokenNotFound: ErrTokenNotFound,
	CodeTokenExpired: ErrTokenExpired, CodeTokenExhausted: ErrTokenExhausted, CodeTokenRevoked: ErrTokenRevoked,
	CodeTokenConstraint: ErrTokenConstraint,
}

// Codes lists every error code the API answers with.
func Codes() []string {
	out := make([]string, 0, len(sentinels))
	for c := range sentinels {
		out = append(out, c)
	}
	return out
}

// Sentinel returns the sentinel error of code, nil for an unknown one.
func Sentinel(code string) error { return sentinels[code] }

// ErrorBody is the inside of an error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorEnvelope is an error answer: {"error":{"code":..,"message":..}}.
type ErrorEnvelope struct {
	Error ErrorBody `json:"error"`
}

// APIError is an error answer of a root server's API.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After on a 429 or 503, zero if none.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// Is matches the sentinel of the error's code (ErrNodeRevoked for
// "node_revoked", and so on); ErrRevoked matches the three revocations.
func (e *APIError) Is(target error) bool {
	if target == ErrRevoked {
		return e.Code == CodeNodeRevoked || e.Code == CodeCertRevoked || e.Code == CodeKeyRevoked
	}
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// ErrRevoked is matched by an *APIError refusing a revoked node,
// certificate or key.
var ErrRevoked = errors.New("api: revoked")
