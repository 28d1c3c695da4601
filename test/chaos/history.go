package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how an operation ended, as its client saw it.
type Outcome string

const (
	// Pending: invoked and not (yet) completed. A history taken while
	// operations run shows them as pending; the checker treats them as
	// unknown.
	Pending Outcome = "pending"
	// OK: a definite answer. For writes that includes a definite rejection by
	// the state machine (Result says which).
	OK Outcome = "ok"
	// Fail: certainly no effect (refused before it was sent, rejected before
	// it reached the log, or a read that failed).
	Fail Outcome = "fail"
	// Unknown: a write that may or may not have been committed.
	Unknown Outcome = "unknown"
)

// OpKind names what an operation did.
type OpKind string

// Kinds of operations. The models in this package give their meaning.
const (
	OpRevoke          OpKind = "revoke"          // Key "kind/id"; Result ok or exists
	OpReadRevocation  OpKind = "revocation.read" // consistent read of Key; Result present or absent
	OpListRevocations OpKind = "revocation.list" // consistent list of one kind (Key is the kind); Values the keys
	OpTokenCreate     OpKind = "token.create"    // Key the description; Ref the id; Uses
	OpTokenRevoke     OpKind = "token.revoke"    // Ref the id; Result ok, exists or not_found
	OpTokenConsume    OpKind = "token.consume"   // Ref the id; Result ok, exhausted, revoked or not_found
	OpTokenList       OpKind = "token.list"      // local (possibly stale) list; Tokens
	OpTokenRead       OpKind = "token.read"      // linearizable read of every token; Tokens
	OpProbe           OpKind = "revoke.probe"    // a revoke sent by the failover probe: same meaning as OpRevoke
	OpPolicySet       OpKind = "policy.set"      // Expect the version replaced; Result ok (Version the new one) or conflict
	OpTokenVerify     OpKind = "token.verify"    // Key "token/<jti>" of a token minted by the load; Result valid or refused (Values: the reason)
)

// Definite results.
const (
	ResOK        = "ok"
	ResExists    = "exists"
	ResPresent   = "present"
	ResAbsent    = "absent"
	ResNotFound  = "not_found"
	ResExhausted = "exhausted"
	ResRevoked   = "revoked"
	ResConflict  = "conflict"
	ResValid     = "valid"
	ResRefused   = "refused"
)

// IsWrite reports whether operations of kind k change state.
func (k OpKind) IsWrite() bool {
	switch k {
	case OpRevoke, OpProbe, OpTokenCreate, OpTokenRevoke, OpTokenConsume, OpPolicySet:
		return true
	}
	return false
}

// TokenView is a join token as a list shows it.
type TokenView struct {
	Key     string `json:"key"` // the description its creator gave it
	Ref     string `json:"ref"` // the id the cluster gave it
	Uses    int    `json:"uses"`
	Used    int    `json:"used"`
	Revoked bool   `json:"revoked,omitempty"`
}

// Op is one operation of the history.
type Op struct {
	ID     int    `json:"id"`
	Client int    `json:"client"`
	Server string `json:"server"`
	Kind   OpKind `json:"kind"`
	Key    string `json:"key,omitempty"`
	Ref    string `json:"ref,omitempty"`
	Uses   int    `json:"uses,omitempty"`
	// Node is the node id a registration asked for; Serial the serial of
	// the certificate it got.
	Node   string `json:"node,omitempty"`
	Serial string `json:"serial,omitempty"`
	// Expect is the policy version a policy write replaces; Version the
	// version it made.
	Expect  uint64  `json:"expect,omitempty"`
	Version uint64  `json:"version,omitempty"`
	Outcome Outcome `json:"outcome"`
	Result  string  `json:"result,omitempty"`
	// Values are the keys a revocation list returned.
	Values []string `json:"values,omitempty"`
	// Tokens are the tokens a token list or read returned.
	Tokens []TokenView `json:"tokens,omitempty"`
	Err    string      `json:"error,omitempty"`
	// Call and Return are the invocation and completion times since the
	// recorder's start, on the monotonic clock. For an unknown outcome
	// Return is when the client gave up, not when the write took effect.
	Call   time.Duration `json:"call_ns"`
	Return time.Duration `json:"return_ns"`

	secret string // a token's secret, between the load's steps; never recorded
	via    int    // the node agent an agent operation goes to (VerifyAtAgent)
}

// Acked reports whether op is a write the cluster acknowledged as done
// (a state change, not a rejection).
func (op Op) Acked() bool {
	return op.Kind.IsWrite() && op.Outcome == OK && op.Result == ResOK
}

// Recorder collects a history from many clients. Begin stamps the
// invocation, End the completion; Ops returns a copy.
type Recorder struct {
	start time.Time
	clock func() time.Time

	mu    sync.Mutex
	ops   []Op
	acked atomic.Int64
}

// NewRecorder starts a history now. clock nil means time.Now (whose
// readings carry the monotonic clock).
func NewRecorder(clock func() time.Time) *Recorder {
	if clock == nil {
		clock = time.Now
	}
	return &Recorder{start: clock(), clock: clock}
}

// Start is when the recorder started, on the wall clock of the host (the
// servers' logs use it too).
func (r *Recorder) Start() time.Time { return r.start }

// Now is the time since the recorder started.
func (r *Recorder) Now() time.Duration { return r.clock().Sub(r.start) }

// Begin records the invocation of op (its Call is set now) and returns its
// id for End.
func (r *Recorder) Begin(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.ID = len(r.ops)
	op.Call = r.Now()
	op.Outcome = Pending
	r.ops = append(r.ops, op)
	return op.ID
}

// End records the completion of operation id: done fills in the outcome and
// the answer; Return is set now.
func (r *Recorder) End(id int, done Op) {
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	op := &r.ops[id]
	op.Server = done.Server
	op.Key, op.Ref, op.Uses, op.Node, op.Serial = done.Key, done.Ref, done.Uses, done.Node, done.Serial
	op.Expect, op.Version = done.Expect, done.Version
	op.Outcome, op.Result, op.Err = done.Outcome, done.Result, done.Err
	op.Values, op.Tokens = done.Values, done.Tokens
	op.Return = now
	if op.Acked() {
		r.acked.Add(1)
	}
}

// Record adds an operation that is already complete, with its own times.
func (r *Recorder) Record(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.ID = len(r.ops)
	r.ops = append(r.ops, op)
	if op.Acked() {
		r.acked.Add(1)
	}
}

// Acked counts the acknowledged writes so far.
func (r *Recorder) Acked() int64 { return r.acked.Load() }

// Ops returns a copy of the history so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// ReadHistory reads JSON lines written by WriteHistory.
func ReadHistory(r io.Reader) ([]Op, error) {
	var ops []Op
	dec := json.NewDecoder(r)
	for {
		var op Op
		err := dec.Decode(&op)
		if errors.Is(err, io.EOF) {
			return ops, nil
		}
		if err != nil {
			return ops, fmt.Errorf("chaos: history line %d: %w", len(ops)+1, err)
		}
		ops = append(ops, op)
	}
}

// WriteHistory writes ops as JSON lines.
func WriteHistory(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return nil
}
