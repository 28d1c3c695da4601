package attack

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/test/harness"
)

// TestMembershipAttacks: node x is a member of networks a and b, which do
// not accept each other; it holds both keys and tries to carry one
// network's membership into the other at a-1, a node of a. Its b
// certificate gets no TLS session; its a certificate with an OPEN naming
// b, or with a token under its b key, is refused at the OPEN; routes
// signed with its b key, as origin or as a hop, are refused; once a
// requires exclusive membership, an OPEN naming b is refused. A flood of
// connections that send no hello to a node of two networks' shared port
// does not keep an honest peer out. Nothing changes in a's state.
func TestMembershipAttacks(t *testing.T) {
	A := harness.Start(t, bin, harness.Config{Servers: 1, Network: "a.members.keymesh.test"})
	B := harness.Start(t, bin, harness.Config{Servers: 1, Network: "b.members.keymesh.test"})
	ctx := ctxT(t, 3*time.Minute)
	xa, xb := join(t, A, "x", ""), join(t, B, "x", "")
	if _, err := A.Client(A.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.91.0.0/16", Origins: []string{"x"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	a1 := A.RunAgent("a-1", A.JoinNode("a-1", api.CreateJoinTokenRequest{}), "--listen", "127.0.0.1:0", "--log-level", "warn", "--peer", "x,role=customer")
	defer func() {
		if t.Failed() {
			t.Logf("a-1's log:\n%s", a1.Log())
		}
	}()
	res, err := a1.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr := res.Listen
	aud := identity.SPIFFEID{Network: A.Network, Kind: identity.KindNode, Name: "a-1"}.String()
	failures := func(reason string) int {
		return a1.Metric(t, `keymesh_session_handshake_failures_total{reason="`+reason+`"}`)
	}
	src := 30
	next := func() string { src++; return fmt.Sprintf("127.0.0.%d", src) }
	before := converged(t, A)

	t.Run("x's certificate of b", func(t *testing.T) {
		n := failures("network")
		if err := refusedTLS(t, A, addr, next(), xb); err == nil {
			t.Fatal("a-1 took a TLS session with a certificate of b")
		}
		if failures("network") != n+1 {
			t.Fatalf("network refusals %d, want %d", failures("network"), n+1)
		}
	})
	openRefused := func(t *testing.T, o session.Open, sub uint8) {
		t.Helper()
		p, err := dialPeer(t, A, addr, next(), xa)
		if err != nil {
			t.Fatal(err)
		}
		p.send(session.MsgOpen, o)
		if nt := p.notification(); nt.Code != session.CodeOpen || nt.Subcode != sub {
			t.Fatalf("refused with %s, want OPEN subcode %d", nt, sub)
		}
	}
	t.Run("x's certificate of a, an OPEN of b", func(t *testing.T) {
		openRefused(t, session.Open{NodeID: "x", Network: B.Network, HoldTime: 30, Role: session.RoleCustomer,
			Token: xb.token(t, aud, xa.chain[0], time.Now())}, session.SubOpenBadNetwork)
	})
	t.Run("x's certificate of a, a token under its b key", func(t *testing.T) {
		openRefused(t, session.Open{NodeID: "x", Network: A.Network, HoldTime: 30, Role: session.RoleCustomer,
			Token: xb.token(t, aud, xa.chain[0], time.Now())}, session.SubOpenAuth)
	})

	// Routes over an honest session of x's a membership.
	p := establish(t, A, addr, next(), xa, aud, session.RoleCustomer)
	t.Run("a route whose origin is x of b", func(t *testing.T) {
		r := &routing.Route{NLRI: routing.MustNLRI("10.91.1.0/24"), Origin: "x", Network: B.Network, SignedAt: time.Now().Unix(), Seq: 1}
		if err := r.Sign(xb.signer()); err != nil {
			t.Fatal(err)
		}
		f, err := r.Forward(xa.signer(), "a-1", false)
		if err != nil {
			t.Fatal(err)
		}
		routeRefused(t, p, a1, f)
	})
	t.Run("a route with a hop of b", func(t *testing.T) {
		r := &routing.Route{NLRI: routing.MustNLRI("10.91.2.0/24"), Origin: "x", Network: A.Network, SignedAt: time.Now().Unix(), Seq: 2}
		if err := r.Sign(xa.signer()); err != nil {
			t.Fatal(err)
		}
		hop, err := r.Forward(xb.signer(), "x", false) // x of b hands it to x of a
		if err != nil {
			t.Fatal(err)
		}
		f, err := hop.Forward(xa.signer(), "a-1", false)
		if err != nil {
			t.Fatal(err)
		}
		routeRefused(t, p, a1, f)
	})
	// The honest route of the same session is taken: the refusals above
	// were of what they carried.
	p.update(xa.own(t, A.Network, "10.91.3.0/24", "a-1", time.Now(), false))
	A.WaitBest(a1, "10.91.3.0/24", 30*time.Second, "x's honest route", func(b *routing.RouteStatus) bool { return b != nil && b.Origin == "x" })

	if after := converged(t, A); after != before {
		t.Fatal("the refused sessions and routes changed a's state")
	}
	p.tc.Close()
	pollMetric(t, func() bool { return !peerEstablished(t, a1, "x") })

	t.Run("an OPEN naming b once a requires exclusive membership", func(t *testing.T) {
		if _, err := A.Client(A.Leader(10*time.Second)).SetNetworkExclusive(ctx, true); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := A.Client(A.Leader(10*time.Second)).SetNetworkExclusive(ctx, false); err != nil {
				t.Fatal(err)
			}
		}()
		openRefused(t, session.Open{NodeID: "x", Network: A.Network, HoldTime: 30, Role: session.RoleCustomer,
			Token: xa.token(t, aud, xa.chain[0], time.Now()), Memberships: []string{B.Network}}, session.SubOpenExclusive)
	})
}

// TestSharedPortFlood: a node of two networks takes both networks'
// sessions on one port, reading each connection's TLS hello first (for
// 5 s at most). Hosts that open many connections and send nothing do not
// keep an honest peer out: past 8 unread from one host a connection is
// closed at once, and past 64 in all a new one closes the oldest unread,
// so the honest peer gets its session well before the flood's
// connections time out.
func TestSharedPortFlood(t *testing.T) {
	A := harness.Start(t, bin, harness.Config{Servers: 1, Network: "a.flood.keymesh.test"})
	B := harness.Start(t, bin, harness.Config{Servers: 1, Network: "b.flood.keymesh.test"})
	dir := A.JoinNode("x", api.CreateJoinTokenRequest{})
	B.JoinNodeAt(B.AnyAPI(nil), dir, "x", B.NodeJoinToken(api.CreateJoinTokenRequest{}))
	listen := harness.FreePort(t)
	x := A.RunAgent("x", dir, "--listen", listen, "--log-level", "warn")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Ten hosts, 20 connections each: more than the 64 hellos read at
	// once, 8 of each host's held.
	for h := range 10 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(70+h))}, Timeout: 5 * time.Second}
		for range 20 {
			c, err := d.Dial("tcp", listen)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
	}
	a1 := A.RunAgent("a-1", A.JoinNode("a-1", api.CreateJoinTokenRequest{}), "--log-level", "warn", "--peer", "x@"+listen)
	A.WaitEstablished(a1, 1, 4*time.Second)
	if !x.Running() {
		t.Fatal("x stopped")
	}
}

// routeRefused sends f and waits until a's RIB from x holds it refused.
func routeRefused(t *testing.T, p *peerConn, a *harness.Agent, f *routing.Route) {
	t.Helper()
	p.send(session.MsgKeepalive, session.Keepalive{})
	p.update(f)
	nlri := f.NLRI.String()
	pollMetric(t, func() bool {
		rs, err := a.Routes(ctxT(t, 10*time.Second), "x")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs.Routes {
			if r.NLRI == nlri {
				if r.Rejected == "" {
					t.Fatalf("taken: %+v", r)
				}
				return true
			}
		}
		return false
	})
	if b, _ := a.Best(ctxT(t, 10*time.Second), nlri); b != nil {
		t.Fatalf("best route for %s: %+v", nlri, b)
	}
}

// peerEstablished: a has an established session with peer.
func peerEstablished(t *testing.T, a *harness.Agent, peer string) bool {
	t.Helper()
	res, err := a.Peers(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Peers {
		if p.ID == peer && p.State == session.Established {
			return true
		}
	}
	return false
}

// pollMetric polls cond (a process has nothing to wait on) for 30 s.
func pollMetric(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling a process
	}
}
