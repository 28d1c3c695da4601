package fsm

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. A rejected command's Result.Err is a *CommandError whose
// Err is one of these; test with errors.Is.
var (
	ErrNotFound        = errors.New("fsm: not found")
	ErrExists          = errors.New("fsm: already exists")
	ErrInvalid         = errors.New("fsm: invalid command")
	ErrConflict        = errors.New("fsm: conflict")
	ErrVersion         = errors.New("fsm: command version newer than this replica")
	ErrTokenNotFound   = errors.New("fsm: join token not found")
	ErrTokenExpired    = errors.New("fsm: join token expired")
	ErrTokenExhausted  = errors.New("fsm: join token has no uses left")
	ErrTokenRevoked    = errors.New("fsm: join token revoked")
	ErrTokenConstraint = errors.New("fsm: join token not valid for this use")
	// ErrLimit: a limit the command carries is reached (pending
	// registrations in all, or from one source).
	ErrLimit = errors.New("fsm: limit reached")
	// ErrASN is what CheckASN's refusals wrap: an AS number that may not
	// name a network or an origin. Apply refuses a command carrying one
	// with ErrInvalid (the stable code), its detail CheckASN's message.
	ErrASN = errors.New("fsm: AS number not usable")

	// ErrSnapshot is returned by Restore for a snapshot it cannot read.
	ErrSnapshot = errors.New("fsm: bad snapshot")
	// ErrReleased is returned by Snapshot.WriteTo after Release.
	ErrReleased = errors.New("fsm: snapshot released")
)

// CommandError is why a command was rejected (or could not be encoded or
// decoded). Err is one of the sentinels above.
type CommandError struct {
	Type   MsgType
	Err    error
	Detail string
}

func (e *CommandError) Error() string {
	if e.Type == 0 && strings.HasPrefix(e.Detail, "fsm: ") {
		// Rebuilt by ErrorFromCode from a full message.
		return e.Detail
	}
	var b strings.Builder
	b.WriteString("fsm: ")
	if e.Type != 0 {
		b.WriteString(e.Type.String())
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "fsm: "))
	} else {
		b.WriteString("error")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

// fail builds a rejection; Apply fills in the type.
func fail(sentinel error, format string, args ...any) *CommandError {
	return &CommandError{Err: sentinel, Detail: fmt.Sprintf(format, args...)}
}

// errorCodes are stable: they cross the network between root servers and
// may appear in API responses. Never change one.
var errorCodes = [...]struct {
	err  error
	code string
}{
	{ErrNotFound, "not_found"},
	{ErrExists, "exists"},
	{ErrInvalid, "invalid"},
	{ErrConflict, "conflict"},
	{ErrVersion, "version"},
	{ErrTokenNotFound, "token_not_found"},
	{ErrTokenExpired, "token_expired"},
	{ErrTokenExhausted, "token_exhausted"},
	{ErrTokenRevoked, "token_revoked"},
	{ErrTokenConstraint, "token_constraint"},
	{ErrLimit, "limit"},
	{ErrSnapshot, "snapshot"},
	{ErrReleased, "released"},
}

// ErrorCodes lists the codes a rejected command can carry (what ErrorCode
// answers for a *CommandError; CodeInternal aside).
func ErrorCodes() []string {
	var out []string
	for _, c := range errorCodes {
		if c.err != ErrSnapshot && c.err != ErrReleased {
			out = append(out, c.code)
		}
	}
	return out
}

// CodeInternal is ErrorCode's answer for an error that wraps no sentinel of
// this package.
const CodeInternal = "internal"

// ErrorCode returns the stable code of the fsm sentinel err wraps (e.g.
// "token_exhausted"), "" for nil and CodeInternal for anything else.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// ErrorFromCode rebuilds an error from ErrorCode's code and a message (the
// original Error() or any detail), so that errors.Is(err, sentinel) holds on
// the receiving side. An empty code gives nil; an unknown code an error that
// matches no sentinel.
func ErrorFromCode(code, detail string) error {
	if code == "" {
		return nil
	}
	for _, c := range errorCodes {
		if c.code == code {
			return &CommandError{Err: c.err, Detail: detail}
		}
	}
	if detail == "" {
		return fmt.Errorf("fsm: remote error %q", code)
	}
	return fmt.Errorf("fsm: remote error %q: %s", code, detail)
}
