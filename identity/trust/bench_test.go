package trust

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/test/benchlimit"
)

// heldRevocations is how many revocations the roots hold in
// BenchmarkRevocationSync.
const heldRevocations = 100_000

// syncFixture is a root's replica holding heldRevocations revocations, the
// index before one more, and the follower's state at that index.
type syncFixture struct {
	store    *fsm.Store
	before   uint64
	follower *State
	rev      fsm.Revocation
}

var fixture *syncFixture

func newSyncFixture(b *testing.B) *syncFixture {
	if fixture != nil {
		return fixture
	}
	g := newGen(b, 1)
	for i := range heldRevocations {
		if res := g.apply(fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken,
			ID: fmt.Sprintf("jti-%08d-%024x", i, i), Reason: "compromised", PruneAfter: g.now.Add(48 * time.Hour)}}); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	f := &syncFixture{store: g.s, before: g.idx}
	var full Delta
	g.s.Read(func(r fsm.Reader) { full = DeltaFrom(r, 0, true) })
	st, err := NewState(full)
	if err != nil {
		b.Fatal(err)
	}
	f.follower = st
	f.rev = fsm.Revocation{Kind: fsm.RevocationToken, ID: "jti-stolen-0000000000000000000000000000", Reason: "stolen", PruneAfter: g.now.Add(48 * time.Hour)}
	if res := g.apply(fsm.MsgRevoke, fsm.Revoke{Revocation: f.rev}); res.Err != nil {
		b.Fatal(res.Err)
	}
	rec, _ := g.s.Revoked(f.rev.Kind, f.rev.ID)
	f.rev = rec
	fixture = f
	return f
}

// BenchmarkRevocationSync is what one revocation costs each follower while
// the roots hold 100,000: on the root, one consistent read, the answer
// (DeltaFrom) and its JSON, per follower; on the wire, the answer's
// bytes; on the follower, decoding it and applying it to its copy. "full"
// is the whole document (what every change cost before deltas), "delta"
// the changes since the follower's index. The physical limit is encoding
// the one revocation record alone (record-ns, record-B; ratio is
// record-ns over op-ns): no answer can be smaller or cheaper. Aim: a delta
// under 2 KB and under 1 ms of root CPU.
func BenchmarkRevocationSync(b *testing.B) {
	f := newSyncFixture(b)
	one, err := json.Marshal(f.rev)
	if err != nil {
		b.Fatal(err)
	}
	limit := func() {
		if _, err := json.Marshal(f.rev); err != nil {
			b.Fatal(err)
		}
	}
	answer := func(since uint64, full bool) []byte {
		var d Delta
		f.store.Read(func(r fsm.Reader) { d = DeltaFrom(r, since, full) })
		body, err := json.Marshal(d)
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	for _, c := range []struct {
		name string
		full bool
		each int
	}{{"delta", false, 64}, {"full", true, 1}} {
		body := answer(f.before, c.full)
		b.Run("root/"+c.name, func(b *testing.B) {
			benchlimit.Versus(b, "record", c.each, func() { answer(f.before, c.full) }, limit)
			b.ReportMetric(float64(len(body)), "wire-B")
			b.ReportMetric(float64(len(one)), "record-B")
			b.ReportMetric(float64(len(body))/float64(len(one)), "x-record-B")
		})
		b.Run("follower/"+c.name, func(b *testing.B) {
			benchlimit.Versus(b, "record", c.each, func() {
				var d Delta
				if err := json.Unmarshal(body, &d); err != nil {
					b.Fatal(err)
				}
				st, err := f.follower.Apply(d)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := st.Revoked(f.rev.Kind, f.rev.ID); !ok {
					b.Fatal("the follower does not hold the revocation")
				}
			}, limit)
		})
	}
}
