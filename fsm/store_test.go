package fsm

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWaitIndexBlocksAndWakes(t *testing.T) {
	h := newHarness(t)
	h.ok(MsgPolicySet, PolicySet{Text: "a"})

	// Already past: returns at once.
	if idx, err := h.s.WaitIndex(context.Background(), 0); err != nil || idx != 1 {
		t.Fatalf("WaitIndex(0) = %d, %v", idx, err)
	}

	type result struct {
		idx uint64
		err error
	}
	done := make(chan result, 1)
	var started sync.WaitGroup
	started.Add(1)
	go func() {
		started.Done()
		idx, err := h.s.WaitIndex(context.Background(), 1)
		done <- result{idx, err}
	}()
	started.Wait()
	select {
	case r := <-done:
		t.Fatalf("WaitIndex(1) returned %+v before anything was applied", r)
	default:
	}
	// A rejected command is applied too: it wakes waiters.
	res := h.apply(MsgServerRemove, ServerRemove{Name: "nope"})
	if res.Err == nil {
		t.Fatal("expected a rejection")
	}
	select {
	case r := <-done:
		if r.err != nil || r.idx != 2 {
			t.Fatalf("WaitIndex(1) = %+v, want 2", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitIndex did not wake")
	}

	// Cancellation.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := h.s.WaitIndex(ctx, 2)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitIndex ignored cancellation")
	}

	// Restore wakes waiters too.
	go func() {
		idx, err := h.s.WaitIndex(context.Background(), 2)
		done <- result{idx, err}
	}()
	src := newHarness(t)
	src.seed()
	restoreFrom(t, h.s, src.s)
	select {
	case r := <-done:
		if r.err != nil || r.idx != src.idx {
			t.Fatalf("after restore: %+v, want %d", r, src.idx)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Restore did not wake WaitIndex")
	}
}

func tableChanges(c Changes, tbl Table) (put, del []string) {
	tc := c.Table(tbl)
	return tc.Put, tc.Deleted
}

func TestChanges(t *testing.T) {
	h := newHarness(t)
	h.seed()
	base := h.idx

	if c := h.s.Changes(base); !c.Empty() || c.Index != base {
		t.Fatalf("Changes(current) = %+v", c)
	}
	h.ok(MsgServerRemove, ServerRemove{Name: "root-2"})
	// A key deleted and put again reads as put; one put and deleted as deleted.
	h.ok(MsgJWKPut, JWKPut{Key: JWK{KID: "kid-a", Key: []byte(`{"kty":"EC"}`), Node: "node-a", State: JWKActive, NotAfter: h.now.Add(time.Second)}})
	h.now = h.now.Add(time.Minute)
	h.ok(MsgPruneRevocations, PruneRevocations{}) // kid-a is past its end of life: deleted
	h.ok(MsgJWKPut, JWKPut{Key: JWK{KID: "kid-a", Key: []byte(`{"kty":"EC"}`), Node: "node-a", State: JWKActive}})
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "a1", PruneAfter: h.now.Add(2 * time.Second)}})
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
	h.ok(MsgPolicySet, PolicySet{Text: "p"})
	h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 8}})
	h.ok(MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"})
	h.apply(MsgServerRemove, ServerRemove{Name: "nope"}) // rejected: no change

	c := h.s.Changes(base)
	if c.Reset || c.Index != h.idx || c.Since != base {
		t.Fatalf("header %+v", c)
	}
	want := map[Table][2][]string{
		TableServers:     {nil, {"root-2"}},
		TableRevocations: {{"cert:a1", "node:node-a"}, nil},
		TableNodes:       {{"node-a"}, nil},
		TablePolicy:      {{"policy"}, nil},
		TableJWKS:        {{"kid-a"}, nil},
		TableRouteAuths:  {nil, {"10.0.0.0/8"}},
	}
	check := func(name string, c Changes) {
		t.Helper()
		if len(c.Tables) != len(want) {
			t.Errorf("%s: tables %+v", name, c.Tables)
		}
		for tbl, w := range want {
			put, del := tableChanges(c, tbl)
			if !reflect.DeepEqual(put, w[0]) || !reflect.DeepEqual(del, w[1]) {
				t.Errorf("%s: %s put %q deleted %q, want %q %q", name, tbl, put, del, w[0], w[1])
			}
		}
	}
	check("journal", c)

	// The same answer from the scan path (journal dropped) and from a
	// replica restored from a snapshot.
	h.s.mu.Lock()
	h.s.journal, h.s.journalFloor = nil, h.idx
	h.s.mu.Unlock()
	check("scan", h.s.Changes(base))
	r := New()
	restoreFrom(t, r, h.s)
	check("restored", r.Changes(base))

	// Later since: only what changed after it.
	c = h.s.Changes(h.idx - 2)
	if put, del := tableChanges(c, TableRouteAuths); put != nil || len(del) != 1 || len(c.Tables) != 1 {
		t.Fatalf("Changes(idx-2) = %+v", c)
	}

	// Pruning deletes revocations.
	pruneFrom := h.idx
	h.now = h.now.Add(time.Hour)
	h.ok(MsgPruneRevocations, PruneRevocations{})
	if put, del := tableChanges(h.s.Changes(pruneFrom), TableRevocations); put != nil || !reflect.DeepEqual(del, []string{"cert:a1"}) {
		t.Fatalf("after prune: put %q deleted %q", put, del)
	}
}

func TestChangesTombstoneLimit(t *testing.T) {
	h := newHarness(t)
	h.s.tombLimit = 3
	h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("r"), SealedKey: []byte("k")}})
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		h.ok(MsgServerPut, ServerPut{Server: Server{Name: n, RaftAddr: n + ":1", APIAddr: n + ":2", Status: ServerVoter}})
	}
	start := h.idx
	for _, n := range []string{"a", "b", "c", "d"} {
		h.ok(MsgServerRemove, ServerRemove{Name: n})
	}
	// Four deletions, three tombstones kept: the one of "a" is gone and
	// the floor is its index.
	h.s.mu.Lock()
	h.s.journal, h.s.journalFloor = nil, h.idx // force the scan path
	h.s.mu.Unlock()
	c := h.s.Changes(start)
	if !c.Reset {
		t.Fatalf("Changes below the floor without Reset: %+v", c)
	}
	if _, del := tableChanges(c, TableServers); !reflect.DeepEqual(del, []string{"b", "c", "d"}) {
		t.Fatalf("deleted %q", del)
	}
	if c := h.s.Changes(start + 1); c.Reset {
		t.Fatalf("Changes at the floor reset: %+v", c)
	}
	// Putting a key back removes its tombstone.
	h.ok(MsgServerPut, ServerPut{Server: Server{Name: "c", RaftAddr: "c:1", APIAddr: "c:2", Status: ServerVoter}})
	h.s.mu.RLock()
	n := len(h.s.st.tombs.m)
	h.s.mu.RUnlock()
	if n != 2 {
		t.Fatalf("%d tombstones, want 2", n)
	}
}

func TestUnknownTypes(t *testing.T) {
	h := newHarness(t)
	h.seed()
	before := h.s.Hash()

	res := h.raw([]byte{0x80 | 0x7e, 0xff, 0x00})
	if res.Err != nil || !res.Ignored || res.Type != 0xfe {
		t.Fatalf("ignorable unknown type: %+v", res)
	}
	if h.s.Hash() != before {
		t.Fatal("ignored command changed the hash")
	}

	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("unknown type without the ignore flag did not panic")
		}
		if msg, _ := r.(string); !strings.Contains(msg, "unknown command type 0x7e") {
			t.Fatalf("panic %v", r)
		}
		if h.s.Index() != h.idx || h.s.Hash() != before {
			t.Fatal("state moved before the panic")
		}
	}()
	h.s.Apply(h.idx+1, []byte{0x7e, '{', '}'})
}

func TestApplyIndexOrder(t *testing.T) {
	s := New()
	data, err := Encode(MsgPolicySet, t0, PolicySet{Text: "a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{0} {
		if res := s.Apply(idx, data); !errors.Is(res.Err, ErrInvalid) {
			t.Fatalf("Apply(%d) = %+v", idx, res)
		}
	}
	if res := s.Apply(5, data); res.Err != nil {
		t.Fatal(res.Err)
	}
	hash := s.Hash()
	for _, idx := range []uint64{5, 4} {
		if res := s.Apply(idx, data); !errors.Is(res.Err, ErrInvalid) || s.Index() != 5 || s.Hash() != hash {
			t.Fatalf("Apply(%d) after 5 = %+v, index %d", idx, res, s.Index())
		}
	}
}

// TestConcurrentReaders runs queries, snapshots and waits while commands
// are applied (meaningful under -race).
func TestConcurrentReaders(t *testing.T) {
	h := newHarness(t)
	h.seed()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch i {
				case 0:
					h.s.Revoked(RevocationCert, "a1")
					h.s.Nodes()
					h.s.Changes(1)
				case 1:
					sn, _ := h.s.Snapshot()
					_, _ = sn.WriteTo(discard{})
					sn.Release()
				case 2:
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					_, _ = h.s.WaitIndex(ctx, h.s.Index())
					cancel()
					_ = h.s.Hash()
				}
			}
		}(i)
	}
	for i := 0; i < 300; i++ {
		h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)}})
	}
	close(stop)
	wg.Wait()
	if n := h.s.RevocationCount(); n != 300 {
		t.Fatalf("%d revocations", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestTombstoneTrimIsOrderFree: a replica restored from a snapshot rebuilds
// its tombstone queue in (index, key) order, not in the order the deletions
// happened; trimming must drop the same tombstones on both.
func TestTombstoneTrimIsOrderFree(t *testing.T) {
	h := newHarness(t)
	h.s.tombLimit = 5
	h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("r"), SealedKey: []byte("k")}})
	for _, n := range []string{"s1", "s2"} {
		h.ok(MsgServerPut, ServerPut{Server: Server{Name: n, RaftAddr: n + ":1", APIAddr: n + ":2", Status: ServerVoter}})
	}
	for _, id := range []string{"t1", "t2"} {
		h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: id, Hash: hashOf(id), Kind: TokenKindNode, Uses: 1, Expiry: h.now.Add(time.Minute)}})
		h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: id, PruneAfter: h.now.Add(time.Second)}})
	}
	h.now = h.now.Add(time.Hour)
	h.ok(MsgPruneRevocations, PruneRevocations{}) // one index, four tombstones in two tables

	r := New()
	r.tombLimit = 5
	restoreFrom(t, r, h.s)
	h2 := &harness{t: t, s: r, idx: h.idx, now: h.now}
	for _, x := range []*harness{h, h2} {
		x.ok(MsgServerRemove, ServerRemove{Name: "s1"})
		x.ok(MsgServerRemove, ServerRemove{Name: "s2"})
	}
	if h.s.Hash() != r.Hash() {
		t.Fatal("trimming depends on the order deletions were made")
	}
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	if n, floor := len(h.s.st.tombs.m), h.s.st.tombFloor; n != 2 || floor != h.idx-2 {
		t.Fatalf("%d tombstones, floor %d: want 2 and %d (the prune dropped whole)", n, floor, h.idx-2)
	}
}

// TestTableIndex: a table's index moves with its own puts and deletes
// only (not with other tables' writes or with refused commands), the
// Reader sees the same, and a restore gives it back: exactly while the
// tombstones are kept, and never below the last change nor above the
// store's index once they are trimmed.
func TestTableIndex(t *testing.T) {
	h := newHarness(t)
	for _, tbl := range tableNames {
		if got := h.s.TableIndex(tbl); got != 0 {
			t.Fatalf("a new store's %s at %d", tbl, got)
		}
	}
	h.seed()
	if got := h.s.TableIndex("no_such_table"); got != 0 {
		t.Fatalf("an unknown table at %d", got)
	}
	want := map[Table]uint64{}
	for _, tbl := range tableNames {
		want[tbl] = h.s.TableIndex(tbl)
	}
	if want[TableCAs] != 1 || want[TableJWKS] != h.idx || want[TableRouteAuths] != 0 {
		t.Fatalf("after the seed: %v", want)
	}
	stale := uint64(1)
	steps := []struct {
		name  string
		typ   MsgType
		p     any
		err   error
		moves []Table // the tables whose index becomes this command's
	}{
		{"authorize", MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24}}, nil, []Table{TableRouteAuths}},
		{"revoke", MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-1"}}, nil, []Table{TableRevocations}},
		{"authorize another with an AS", MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.1.0.0/16", Origins: []string{"node-a"}, MaxLength: 24, ASN: 64500}}, nil, []Table{TableRouteAuths}},
		{"refused: AS_TRANS", MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.2.0.0/16", Origins: []string{"node-a"}, MaxLength: 24, ASN: 23456}}, ErrInvalid, nil},
		{"refused: stale", MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-b"}, MaxLength: 24}, ExpectModifyIndex: &stale}, ErrConflict, nil},
		{"network AS", MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), ASN: 64500}, ExpectModifyIndex: 1}, nil, []Table{TableCAs}},
		{"policy", MsgPolicySet, PolicySet{Text: "permit"}, nil, []Table{TablePolicy}},
		{"unauthorize", MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"}, nil, []Table{TableRouteAuths}},
		{"refused: unauthorize unknown", MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"}, ErrNotFound, nil},
		{"remove a server", MsgServerRemove, ServerRemove{Name: "root-2"}, nil, []Table{TableServers}},
		{"authorize the same again", MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.1.0.0/16", Origins: []string{"node-a"}, MaxLength: 24, ASN: 64500}}, nil, []Table{TableRouteAuths}},
	}
	for _, st := range steps {
		res := h.apply(st.typ, st.p)
		if !errors.Is(res.Err, st.err) || (st.err == nil && res.Err != nil) {
			t.Fatalf("%s: err %v, want %v", st.name, res.Err, st.err)
		}
		for _, tbl := range st.moves {
			want[tbl] = h.idx
		}
		var read map[Table]uint64
		h.s.Read(func(r Reader) {
			read = map[Table]uint64{}
			for _, tbl := range tableNames {
				read[tbl] = r.TableIndex(tbl)
			}
		})
		for _, tbl := range tableNames {
			if got := h.s.TableIndex(tbl); got != want[tbl] || read[tbl] != got {
				t.Fatalf("%s: %s at %d (reader %d), want %d", st.name, tbl, got, read[tbl], want[tbl])
			}
		}
	}

	// Every deletion still has its tombstone: a restore gives the same.
	r := New()
	restoreFrom(t, r, h.s)
	for _, tbl := range tableNames {
		if got := r.TableIndex(tbl); got != want[tbl] {
			t.Fatalf("restored: %s at %d, want %d", tbl, got, want[tbl])
		}
	}

	// A deletion whose tombstone was trimmed: the restored index is the
	// floor, above the true last change, at most the store's index, and
	// the table is the same at both.
	h = newHarness(t)
	h.s.tombLimit = 1
	h.seed()
	h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24}})
	h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.1.0.0/16", Origins: []string{"node-a"}, MaxLength: 24}})
	h.ok(MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"})
	last := h.idx
	routes := h.s.RouteAuths()
	h.ok(MsgServerRemove, ServerRemove{Name: "root-1"})
	h.ok(MsgServerRemove, ServerRemove{Name: "root-2"})
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-2"}})
	if got := h.s.TableIndex(TableRouteAuths); got != last {
		t.Fatalf("live: route authorizations at %d, want %d", got, last)
	}
	r = New()
	restoreFrom(t, r, h.s)
	got := r.TableIndex(TableRouteAuths)
	if got < last || got > r.Index() || got != r.st.tombFloor || got == last {
		t.Fatalf("restored after a trim: route authorizations at %d, the last change %d, floor %d, index %d", got, last, r.st.tombFloor, r.Index())
	}
	if !reflect.DeepEqual(r.RouteAuths(), routes) {
		t.Fatal("the route authorizations differ between the last change and the restored index")
	}
	if got := r.TableIndex(TableRevocations); got != h.idx {
		t.Fatalf("restored: revocations at %d, want %d", got, h.idx)
	}
}
