package fsm

import (
	"errors"
	"testing"
	"time"
)

// TestJoinTokenConsume walks join tokens through their limits: uses,
// expiry against the command time, revocation, the node-id constraint and
// the kind.
func TestJoinTokenConsume(t *testing.T) {
	expiry := t0.Add(time.Hour)
	type step struct {
		at     time.Time // command time
		kind   string
		nodeID string
		err    error
		used   int // Used afterwards
	}
	cases := []struct {
		name   string
		token  JoinToken
		revoke bool
		steps  []step
	}{
		{name: "uses are counted", token: JoinToken{Kind: TokenKindNode, Uses: 2},
			steps: []step{
				{kind: TokenKindNode, nodeID: "n1", used: 1},
				{kind: TokenKindNode, nodeID: "n2", used: 2},
				{kind: TokenKindNode, nodeID: "n3", err: ErrTokenExhausted, used: 2},
				{kind: TokenKindNode, nodeID: "n3", err: ErrTokenExhausted, used: 2},
			}},
		{name: "expiry is the command time", token: JoinToken{Kind: TokenKindNode, Uses: 5},
			steps: []step{
				{at: expiry.Add(-time.Nanosecond), kind: TokenKindNode, used: 1},
				{at: expiry, kind: TokenKindNode, err: ErrTokenExpired, used: 1},
				{at: expiry.Add(time.Hour), kind: TokenKindNode, err: ErrTokenExpired, used: 1},
			}},
		{name: "revoked", token: JoinToken{Kind: TokenKindNode, Uses: 5}, revoke: true,
			steps: []step{{kind: TokenKindNode, err: ErrTokenRevoked}}},
		{name: "revoked wins over expired", token: JoinToken{Kind: TokenKindNode, Uses: 5}, revoke: true,
			steps: []step{{at: expiry.Add(time.Hour), kind: TokenKindNode, err: ErrTokenRevoked}}},
		{name: "node id constraint", token: JoinToken{Kind: TokenKindNode, NodeID: "node-7", Uses: 2},
			steps: []step{
				{kind: TokenKindNode, nodeID: "node-8", err: ErrTokenConstraint},
				{kind: TokenKindNode, nodeID: "", err: ErrTokenConstraint},
				{kind: TokenKindNode, nodeID: "node-7", used: 1},
			}},
		{name: "kind mismatch", token: JoinToken{Kind: TokenKindRoot, Uses: 1},
			steps: []step{
				{kind: TokenKindNode, nodeID: "n", err: ErrTokenConstraint},
				{kind: TokenKindRoot, nodeID: "root-4", used: 1},
				{kind: TokenKindRoot, nodeID: "root-5", err: ErrTokenExhausted, used: 1},
			}},
		{name: "exhausted before kind", token: JoinToken{Kind: TokenKindRoot, Uses: 1},
			steps: []step{
				{kind: TokenKindRoot, used: 1},
				{kind: TokenKindNode, err: ErrTokenExhausted, used: 1},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tok := tc.token
			tok.ID, tok.Hash, tok.Expiry = "tok", hashOf("s"), expiry
			h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: tok})
			if tc.revoke {
				h.ok(MsgJoinTokenRevoke, JoinTokenRevoke{ID: "tok"})
			}
			for i, st := range tc.steps {
				at := st.at
				if at.IsZero() {
					at = h.now.Add(time.Second)
				}
				before := h.s.Hash()
				res := h.raw(rawCommand(MsgJoinTokenConsume, 1, at, JoinTokenConsume{Hash: hashOf("s"), Kind: st.kind, NodeID: st.nodeID}))
				if !errors.Is(res.Err, st.err) || (st.err == nil && res.Err != nil) {
					t.Fatalf("step %d: err = %v, want %v", i, res.Err, st.err)
				}
				got, ok := h.s.JoinToken(hashOf("s"))
				if !ok || got.Used != st.used {
					t.Fatalf("step %d: used = %d, want %d", i, got.Used, st.used)
				}
				if (res.Err != nil) != (h.s.Hash() == before) {
					t.Fatalf("step %d: hash moved = %v for err %v", i, h.s.Hash() != before, res.Err)
				}
			}
		})
	}
}

// TestJoinTokenPrune drops expired and used-up tokens and keeps the rest.
func TestJoinTokenPrune(t *testing.T) {
	h := newHarness(t)
	mk := func(id string, uses int, expiry time.Time) {
		h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: id, Hash: hashOf(id), Kind: TokenKindNode, Uses: uses, Expiry: expiry}})
	}
	mk("expiring", 5, t0.Add(20*time.Minute))
	mk("used-up", 1, t0.Add(time.Hour))
	mk("live", 2, t0.Add(time.Hour))
	h.ok(MsgJoinTokenConsume, JoinTokenConsume{Hash: hashOf("used-up"), Kind: TokenKindNode})
	h.ok(MsgJoinTokenConsume, JoinTokenConsume{Hash: hashOf("live"), Kind: TokenKindNode})
	h.now = t0.Add(10 * time.Minute)
	h.ok(MsgPruneRevocations, PruneRevocations{})
	ids := func() (out []string) {
		for _, tok := range h.s.JoinTokens() {
			out = append(out, tok.ID)
		}
		return out
	}
	if got := ids(); len(got) != 2 {
		t.Fatalf("after first prune: %v, want expiring and live", got)
	}
	if _, ok := h.s.JoinTokenByID("used-up"); ok {
		t.Fatal("used-up token still found by id")
	}
	h.now = t0.Add(20*time.Minute - time.Second) // the prune below runs at exactly the expiry
	h.ok(MsgPruneRevocations, PruneRevocations{})
	if got := ids(); len(got) != 1 || got[0] != "live" {
		t.Fatalf("after second prune: %v, want [live]", got)
	}
	// The id is free again once its token is gone.
	mk("used-up", 1, t0.Add(2*time.Hour))
}
