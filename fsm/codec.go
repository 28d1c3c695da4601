package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"time"
)

// MaxCommandSize bounds one encoded command (type byte and envelope).
const MaxCommandSize = 2 << 20

// Envelope is a decoded command: its type, payload version, the proposer's
// timestamp and the still-encoded payload.
type Envelope struct {
	Type    MsgType
	Version uint16
	Time    time.Time // UTC, from the envelope's unix nanoseconds
	Payload json.RawMessage
}

type wireEnvelope struct {
	V  *uint16         `json:"v"`
	TS *int64          `json:"ts"`
	P  json.RawMessage `json:"p"`
}

// Encode builds the command for t: the type byte, then the envelope
// {"v":<current version of t>,"ts":<ts in unix nanoseconds>,"p":<payload>}.
// payload must be the payload struct of t (or a pointer to it), e.g.
// Revoke for MsgRevoke. The payload is checked as Apply would check it
// without looking at the state, so most bad commands fail here, before they
// are proposed. Unknown types are encoded (at version 1) only with
// IgnoreUnknownFlag set.
func Encode(t MsgType, ts time.Time, payload any) ([]byte, error) {
	if ts.IsZero() || ts.UnixNano() <= 0 || !validTime(ts) {
		return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "timestamp out of range"}
	}
	now := ts.UTC()
	version := uint16(1)
	if t.Known() {
		version, _ = CurrentVersion(t)
		want := reflect.TypeOf(newPayload(t)).Elem()
		got := reflect.TypeOf(payload)
		if got != nil && got.Kind() == reflect.Pointer {
			got = got.Elem()
		}
		if got != want {
			return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: fmt.Sprintf("payload is %v, want fsm.%s", got, want.Name())}
		}
		// Check a copy: normalisation must not touch the caller's value.
		p := newPayload(t)
		raw, err := json.Marshal(payload)
		if err != nil {
			return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "encode payload: " + err.Error()}
		}
		if err := json.Unmarshal(raw, p); err != nil {
			return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "encode payload: " + err.Error()}
		}
		if err := p.check(now); err != nil {
			err.Type = t
			return nil, err
		}
	} else if t&IgnoreUnknownFlag == 0 {
		return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "unknown command type without the ignore flag"}
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "encode payload: " + err.Error()}
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: "payload must encode as a JSON object"}
	}
	out := make([]byte, 0, len(raw)+48)
	out = append(out, byte(t))
	out = append(out, `{"v":`...)
	out = strconv.AppendUint(out, uint64(version), 10)
	out = append(out, `,"ts":`...)
	out = strconv.AppendInt(out, ts.UnixNano(), 10)
	out = append(out, `,"p":`...)
	out = append(out, raw...)
	out = append(out, '}')
	if len(out) > MaxCommandSize {
		return nil, &CommandError{Type: t, Err: ErrInvalid, Detail: fmt.Sprintf("command is %d bytes, limit %d", len(out), MaxCommandSize)}
	}
	return out, nil
}

// Decode parses a command's framing: the type byte and the envelope. It does
// not look at the payload beyond checking that it is a JSON object, and does
// not check the version against the type (Apply does). Errors are
// *CommandError wrapping ErrInvalid.
func Decode(data []byte) (Envelope, error) {
	if len(data) == 0 {
		return Envelope{}, &CommandError{Err: ErrInvalid, Detail: "empty command"}
	}
	t := MsgType(data[0])
	bad := func(format string, args ...any) (Envelope, error) {
		return Envelope{}, &CommandError{Type: t, Err: ErrInvalid, Detail: fmt.Sprintf(format, args...)}
	}
	if len(data) > MaxCommandSize {
		return bad("command is %d bytes, limit %d", len(data), MaxCommandSize)
	}
	var w wireEnvelope
	if err := strictUnmarshal(data[1:], &w); err != nil {
		return bad("envelope: %v", err)
	}
	switch {
	case w.V == nil:
		return bad("envelope: missing v")
	case *w.V == 0:
		return bad("envelope: version 0")
	case w.TS == nil:
		return bad("envelope: missing ts")
	case *w.TS <= 0:
		return bad("envelope: ts %d is not a positive unix nanosecond time", *w.TS)
	case len(w.P) == 0 || w.P[0] != '{':
		return bad("envelope: p must be a JSON object")
	}
	return Envelope{Type: t, Version: *w.V, Time: time.Unix(0, *w.TS).UTC(), Payload: w.P}, nil
}

// strictUnmarshal decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
