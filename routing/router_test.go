package routing

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

func announce(t testing.TB, n *testNode, nlri string) {
	t.Helper()
	if _, err := n.router.Announce(context.Background(), MustNLRI(nlri), "", nil); err != nil {
		t.Fatal(err)
	}
}

// line makes n started nodes linked in a line, internal sessions.
func line(m *testMesh, ids ...string) []*testNode {
	var out []*testNode
	for _, id := range ids {
		n := m.node(id)
		n.start()
		out = append(out, n)
	}
	for i := 1; i < len(out); i++ {
		m.link(out[i-1], out[i], RoleInternal)
	}
	return out
}

// TestLineAndDiamond: an announcement crosses a line of five nodes with
// its path signed at every hop, and a withdrawal follows it; in a diamond
// the best path is chosen, and chosen again when a session ends.
func TestLineAndDiamond(t *testing.T) {
	m := newTestMesh(t)
	ns := line(m, "a", "b", "c", "d", "e")
	announce(t, ns[0], "10.1.0.0/24")
	ns[4].waitPath("10.1.0.0/24", "a", "b", "c", "d")
	if b := ns[4].best("10.1.0.0/24"); b.State != "not-found" || b.From != "d" {
		t.Fatalf("%+v", b)
	}
	if err := ns[0].router.Withdraw(context.Background(), MustNLRI("10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	ns[4].waitPath("10.1.0.0/24")
	if rs := ns[4].routes(""); len(rs) != 0 {
		t.Fatalf("after the withdrawal: %+v", rs)
	}

	// The diamond: s - l, s - r, l - t, r - t.
	s, l, r, tt := m.node("s"), m.node("l"), m.node("r"), m.node("t")
	for _, n := range []*testNode{s, l, r, tt} {
		n.start()
	}
	m.link(s, l, RoleInternal)
	m.link(s, r, RoleInternal)
	m.link(l, tt, RoleInternal)
	m.link(r, tt, RoleInternal)
	announce(t, s, "service:web.prod")
	tt.waitPath("service:web.prod", "s", "l") // l before r: the tie-break
	m.cut("l", "t")
	tt.waitPath("service:web.prod", "s", "r")
	m.cut("r", "t")
	tt.waitPath("service:web.prod")
}

// TestPeerLockDiagram is the seed document's AS-path manipulation
// diagram: B takes P via A only; M's path [M, A] is refused.
func TestPeerLockDiagram(t *testing.T) {
	m := newTestMesh(t)
	a, mal, b := m.node("a"), m.node("m"), m.node("b")
	b.locks = []Lock{{Prefix: MustPrefix("10.1.0.0/16"), Via: "a"}}
	a.start()
	mal.start()
	b.start()
	m.link(a, b, RoleInternal)
	m.link(a, mal, RoleInternal)
	m.link(mal, b, RoleInternal)
	announce(t, a, "10.1.1.0/24")
	b.waitPath("10.1.1.0/24", "a")
	b.waitFor("m's path refused by the lock", func() bool {
		for _, r := range b.routes("m") {
			if r.NLRI == "10.1.1.0/24" && strings.Contains(r.Rejected, "peer lock") {
				return true
			}
		}
		return false
	})
	m.cut("a", "b")
	b.waitPath("10.1.1.0/24") // never via m
}

// TestRouteLeakDiagram is the seed document's route-leak diagram: C takes
// the provider P's route and does not send it to its other provider P2;
// C's own route goes to both. A customer's route marked Only-To-Customer
// is a leak.
func TestRouteLeakDiagram(t *testing.T) {
	m := newTestMesh(t)
	p, c, p2 := m.node("p"), m.node("c"), m.node("p2")
	p.start()
	c.start()
	m.link(c, p, RoleProvider)
	m.link(c, p2, RoleProvider) // p2 runs no router: its inbox shows what c sends
	announce(t, p, "0.0.0.0/0")
	c.waitPath("0.0.0.0/0", "p")
	announce(t, c, "service:myservice")
	got := map[string]bool{}
	for !got["service:myservice"] {
		select {
		case body := <-p2.inbox:
			u, err := DecodeUpdate(body)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range u.Announce {
				got[r.Key()] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatal("c did not send its own route to p2")
		}
	}
	if got["0.0.0.0/0"] {
		t.Fatal("c leaked its provider's route to its other provider")
	}
	// A customer sends a route a hop marked Only-To-Customer: a leak.
	cust := m.node("cust")
	m.link(c, cust, RoleCustomer)
	leak := cust.forward(p.forward(p.signed("192.0.2.0/24", 1, m.now()), "cust", true), "c", false)
	c.inject("cust", []*Route{leak})
	c.waitFor("the leak refused", func() bool {
		rs := c.routes("cust")
		return len(rs) == 1 && strings.Contains(rs[0].Rejected, "route leak")
	})
}

// TestFloodDiagram is the seed document's flood diagram: a session of
// 1,000 prefixes at most takes 1,000 (warning at 90 %), and the 1,001st
// ends it with Cease "maximum number of prefixes reached" and a hold-down;
// its routes go.
func TestFloodDiagram(t *testing.T) {
	m := newTestMesh(t)
	att, v := m.node("attacker"), m.node("victim")
	v.start()
	m.link(v, att, RoleCustomer)
	var batch []*Route
	send := func() { v.inject("attacker", batch); batch = nil }
	for i := range 1000 {
		batch = append(batch, att.forward(att.signed(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), 1, m.now()), "victim", false))
		if len(batch) == 100 {
			send()
		}
	}
	v.waitFor("1,000 routes taken", func() bool { return len(v.routes("attacker")) == 1000 })
	var text strings.Builder
	if err := v.router.WritePrometheus(&text); err != nil || !strings.Contains(text.String(), "keymesh_route_max_prefix_warnings_total 1\n") {
		t.Fatalf("no warning counted at 90 %% (%v):\n%s", err, text.String())
	}
	select {
	case h := <-m.holds:
		t.Fatalf("held down at 1,000: %s", h)
	default:
	}
	batch = append(batch, att.forward(att.signed("10.99.0.0/24", 1, m.now()), "victim", false))
	send()
	select {
	case h := <-m.holds:
		if !strings.HasPrefix(h, "attacker: maximum number of prefixes reached") {
			t.Fatalf("hold-down: %s", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the 1,001st prefix did not end the session")
	}
	v.waitFor("the attacker's routes gone", func() bool { return len(v.routes("")) == 0 })
}

// TestRevocationTakesRoutes: revoking the origin's node, or a hop's key,
// takes the route from every node at the next trust change, and the
// withdrawals follow downstream.
func TestRevocationTakesRoutes(t *testing.T) {
	for _, c := range []struct {
		name string
		rev  func(ns []*testNode) fsm.Revocation
	}{
		{"origin node", func(ns []*testNode) fsm.Revocation { return fsm.Revocation{Kind: fsm.RevocationNode, ID: "a"} }},
		{"hop key", func(ns []*testNode) fsm.Revocation {
			return fsm.Revocation{Kind: fsm.RevocationKey, ID: ns[1].key.Load().KID}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestMesh(t)
			ns := line(m, "a", "b", "c", "d")
			announce(t, ns[0], "10.1.0.0/24")
			ns[3].waitPath("10.1.0.0/24", "a", "b", "c")
			r := c.rev(ns)
			r.Time = m.now()
			m.apply(trust.Records{Revocations: []fsm.Revocation{r}})
			ns[2].waitPath("10.1.0.0/24")
			ns[3].waitPath("10.1.0.0/24")
		})
	}
}

// TestOriginResignsAndRotates: an origin signs its routes again before the
// window closes (a higher sequence number, older ones ignored); after a key
// rotation the new key is staged, then the routes are signed with it, and
// the old key's routes are replaced.
func TestOriginResignsAndRotates(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	a.start(func(c *RouterConfig) { c.Refresh, c.StageDelay = time.Hour, 50*time.Millisecond })
	b.start()
	m.link(a, b, RoleInternal)
	announce(t, a, "10.1.0.0/24")
	b.waitPath("10.1.0.0/24", "a")
	first := *b.best("10.1.0.0/24")

	m.advance(time.Hour + time.Second)
	a.router.TrustChanged() // wakes the loop; the refresh is due
	b.waitFor("a signed again", func() bool { x := b.best("10.1.0.0/24"); return x != nil && x.Seq > first.Seq })
	// The first signature is older now: replayed, it is ignored.
	replay := a.forward(a.signed("10.1.0.0/24", first.Seq, m.now()), "b", false)
	b.inject("a", []*Route{replay})
	b.inject("a", nil, "192.0.2.0/24") // a marker: the replay was taken before it
	b.waitFor("the older sequence number ignored", func() bool {
		x := b.best("10.1.0.0/24")
		return x != nil && x.Seq > first.Seq
	})

	oldKID := a.key.Load().KID
	a.rotate()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ks, err := a.router.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ks.Staged == a.key.Load().KID && !ks.StagedSince.IsZero() {
			if ks.KID != oldKID {
				t.Fatalf("routes signed with the new key before its stage: %+v", ks)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new key was not staged: %+v", ks)
		}
		time.Sleep(5 * time.Millisecond) // the router checks its trust view on its own
	}
	m.advance(time.Second) // past the stage delay on the fake clock
	a.router.TrustChanged()
	b.waitFor("routes under the new key", func() bool {
		x := b.best("10.1.0.0/24")
		return x != nil && x.KID == a.key.Load().KID
	})
	ks, err := a.router.Keys(context.Background())
	if err != nil || ks.KID != a.key.Load().KID || ks.Staged != "" || ks.KID == oldKID {
		t.Fatalf("key status %+v (%v)", ks, err)
	}
}

// TestExportRules: RFC 9234's egress and ingress rules as a table.
func TestExportRules(t *testing.T) {
	for _, c := range []struct {
		otc      bool
		to       Role
		exported bool
		marked   bool
	}{
		{false, RoleProvider, true, false}, {false, RolePeer, true, true}, {false, RoleCustomer, true, true}, {false, RoleInternal, true, false},
		{true, RoleProvider, false, true}, {true, RolePeer, false, true}, {true, RoleCustomer, true, true}, {true, RoleInternal, true, true},
	} {
		if got := exports(c.otc, c.to); got != c.exported {
			t.Errorf("otc=%v to %s: exported %v", c.otc, c.to, got)
		}
		if got := marks(c.otc, c.to); got != c.marked {
			t.Errorf("otc=%v to %s: marked %v", c.otc, c.to, got)
		}
	}
}

// TestStaleRoutesSwept: a route whose origin stops signing it again leaves
// the RIBs when it leaves the replay window, even if no neighbour
// withdraws it.
func TestStaleRoutesSwept(t *testing.T) {
	m := newTestMesh(t)
	m.windows = 100 * time.Second
	a, b := m.node("a"), m.node("b")
	b.start()
	m.link(b, a, RoleInternal)
	b.inject("a", []*Route{a.forward(a.signed("10.1.0.0/24", 1, m.now()), "b", false)})
	b.waitPath("10.1.0.0/24", "a")
	m.advance(101 * time.Second)
	b.router.RouteRefresh("nobody") // an event: the loop looks at its timers
	b.waitPath("10.1.0.0/24")
	rs := b.routes("a")
	if len(rs) != 1 || !strings.Contains(rs[0].Rejected, "replay window") {
		t.Fatalf("%+v", rs)
	}
}

// TestNewerSequenceWins: once a newer sequence number of an origin's route
// arrives from one neighbour, the older one held from another is refused,
// though its path is shorter.
func TestNewerSequenceWins(t *testing.T) {
	m := newTestMesh(t)
	a, x, y, z, v := m.node("a"), m.node("x"), m.node("y"), m.node("z"), m.node("v")
	v.start()
	m.link(v, x, RoleInternal)
	m.link(v, y, RoleInternal)
	old := y.forward(a.forward(a.signed("10.1.0.0/24", 1, m.now()), "y", false), "v", false)
	v.inject("y", []*Route{old})
	v.waitPath("10.1.0.0/24", "a", "y")
	newer := x.forward(z.forward(a.forward(a.signed("10.1.0.0/24", 2, m.now()), "z", false), "x", false), "v", false)
	v.inject("x", []*Route{newer})
	v.waitPath("10.1.0.0/24", "a", "z", "x")
	for _, r := range v.routes("y") {
		if !strings.Contains(r.Rejected, "older sequence") {
			t.Fatalf("the older route from y: %+v", r)
		}
	}
}

// TestUpdateQueueBounded: a neighbour whose UPDATEs wait for the loop
// beyond MaxQueuedUpdates is held down, once, and what it sends past the
// bound is dropped.
func TestUpdateQueueBounded(t *testing.T) {
	m := newTestMesh(t)
	v := m.node("v")
	r, err := NewRouter(RouterConfig{Node: "v", Network: testNetwork, Validator: v.val, Signer: v.signer,
		Send:     func(string, []byte) error { return nil },
		HoldDown: func(peer, reason string, d time.Duration) error { m.holds <- peer + ": " + reason; return nil },
		Policy:   func(string) PeerPolicy { return PeerPolicy{} }})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing is taken.
	for range MaxQueuedUpdates + 10 {
		r.Update("flood", []byte{0xa0})
	}
	select {
	case h := <-m.holds:
		if !strings.HasPrefix(h, "flood: ") {
			t.Fatal(h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no hold-down past the queue bound")
	}
	select {
	case h := <-m.holds:
		t.Fatalf("a second hold-down: %s", h)
	default:
	}
	r.qmu.Lock()
	n := len(r.queue)
	r.qmu.Unlock()
	if n != MaxQueuedUpdates {
		t.Fatalf("%d UPDATEs queued, want %d", n, MaxQueuedUpdates)
	}
}
