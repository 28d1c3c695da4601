package attack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/test/harness"
)

// establish establishes a session with the agent at addr as n by hand: OPEN
// with a bound token, the agent's OPEN and KEEPALIVE, our KEEPALIVE.
// role is what n says it is to the agent.
func establish(t *testing.T, c *harness.Cluster, addr, src string, n node, aud string, role session.Role) *peerConn {
	t.Helper()
	p, err := dialPeer(t, c, addr, src, n)
	if err != nil {
		t.Fatal(err)
	}
	p.send(session.MsgOpen, session.Open{NodeID: n.id, Network: c.Network, HoldTime: 30, Role: role, Token: n.token(t, aud, n.chain[0], time.Now())})
	for got := 0; got < 2; {
		f, err := p.fr.Read()
		if err != nil {
			t.Fatalf("establishing: %v", err)
		}
		switch f.Type {
		case session.MsgOpen, session.MsgKeepalive:
			got++
		case session.MsgNotification:
			nt, _ := session.DecodeNotification(f.Body)
			t.Fatalf("establishing: refused with %s", nt)
		}
	}
	p.send(session.MsgKeepalive, session.Keepalive{})
	p.tc.SetDeadline(time.Time{})
	return p
}

// update sends an UPDATE of routes.
func (p *peerConn) update(routes ...*routing.Route) {
	p.t.Helper()
	var u routing.Update
	for _, r := range routes {
		u.Announce = append(u.Announce, *r)
	}
	body, err := routing.EncodeUpdate(u)
	if err != nil {
		p.t.Fatal(err)
	}
	p.send(session.MsgUpdate, session.Update{Payload: body})
}

// received reads the agent's UPDATEs until one carries a route for nlri.
func (p *peerConn) received(nlri string) *routing.Route {
	p.t.Helper()
	p.tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer p.tc.SetReadDeadline(time.Time{})
	for {
		f, err := p.fr.Read()
		if err != nil {
			p.t.Fatalf("waiting for %s: %v", nlri, err)
		}
		if f.Type != session.MsgUpdate {
			continue
		}
		m, err := session.DecodeUpdate(f.Body)
		if err != nil {
			p.t.Fatal(err)
		}
		u, err := routing.DecodeUpdate(m.Payload)
		if err != nil {
			p.t.Fatal(err)
		}
		for i := range u.Announce {
			if u.Announce[i].Key() == nlri {
				return &u.Announce[i]
			}
		}
	}
}

func (n node) signer() routing.Signer {
	kid, _ := identity.Thumbprint(n.key.Public())
	return routing.Signer{Node: n.id, KID: kid, Key: n.key}
}

// own is a route of n's, signed at at, with n's segment to target.
func (n node) own(t *testing.T, network, nlri, target string, at time.Time, otc bool) *routing.Route {
	t.Helper()
	r := &routing.Route{NLRI: routing.MustNLRI(nlri), Origin: n.id, Network: network, SignedAt: at.Unix(), Seq: uint64(at.UnixNano())}
	if err := r.Sign(n.signer()); err != nil {
		t.Fatal(err)
	}
	f, err := r.Forward(n.signer(), target, otc)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRouteAttacks: what a node with a session may try with routes. The
// target (rt-2) peers with an honest origin (rt-1, authorised for
// 10.60.0.0/16 up to /24) and takes mallory as a customer with at most 20
// prefixes. Each attack is refused with its reason in the target's RIB,
// log and metrics; the honest route stays best, and nothing panics.
func TestRouteAttacks(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 5*time.Minute)
	if _, err := c.Client(c.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.60.0.0/16", Origins: []string{"rt-1"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	x := join(t, c, "mallory", "NODE")
	agents := c.StartGraph("rt", 2, func(j, i int) (string, bool) { return "", true }, func(i int) []string {
		if i == 1 {
			return []string{"--peer", "mallory,role=customer,max-prefix=20,hold-down=1m"}
		}
		return nil
	})
	honest, target := agents[0], agents[1]
	c.WaitEstablished(target, 1, time.Minute)
	defer func() {
		if t.Failed() {
			t.Logf("the target's log:\n%s", target.Log())
		}
	}()
	if err := honest.Announce(ctx, "10.60.1.0/24"); err != nil {
		t.Fatal(err)
	}
	c.WaitBest(target, "10.60.1.0/24", 30*time.Second, "the honest route", func(b *routing.RouteStatus) bool { return b != nil && b.Origin == "rt-1" })
	res, err := target.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	aud := identity.SPIFFEID{Network: c.Network, Kind: identity.KindNode, Name: target.Name}.String()
	p := establish(t, c, res.Listen, "127.0.0.21", x, aud, session.RoleCustomer)
	// The target sends its customer its routes: the honest one, with the
	// target's segment to mallory.
	got := p.received("10.60.1.0/24")
	now := time.Now()

	// refused sends routes and waits for the target to refuse the route
	// for nlri with a reason containing want.
	refused := func(t *testing.T, nlri, want string, routes ...*routing.Route) {
		t.Helper()
		p.send(session.MsgKeepalive, session.Keepalive{}) // the hold timer is 30 s
		p.update(routes...)
		deadline := time.Now().Add(30 * time.Second)
		for {
			rs, err := target.Routes(ctx, "mallory")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs.Routes {
				// (An earlier attack's refusal of the same NLRI may still
				// be there until this UPDATE is taken.)
				if r.NLRI == nlri && strings.Contains(r.Rejected, want) {
					if b, _ := target.Best(ctx, "10.60.1.0/24"); b == nil || b.Origin != "rt-1" || b.From != "rt-1" {
						t.Fatalf("the honest route is no longer best: %+v", b)
					}
					return
				}
				if r.NLRI == nlri && r.Rejected == "" {
					t.Fatalf("taken: %+v", r)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the target did not refuse %s; its RIB from mallory: %+v", nlri, rs.Routes)
			}
			time.Sleep(10 * time.Millisecond) // polling a process
		}
	}
	clone := func(r *routing.Route) *routing.Route {
		b, _ := routing.EncodeUpdate(routing.Update{Announce: []routing.Route{*r}})
		u, err := routing.DecodeUpdate(b)
		if err != nil {
			t.Fatal(err)
		}
		return &u.Announce[0]
	}
	forward := func(r *routing.Route, to string) *routing.Route {
		f, err := r.Forward(x.signer(), to, false)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("hijack by an unauthorised origin", func(t *testing.T) {
		refused(t, "10.60.1.0/24", "not authorised", x.own(t, c.Network, "10.60.1.0/24", target.Name, now, false))
	})
	t.Run("a more specific prefix beyond the max length", func(t *testing.T) {
		refused(t, "10.60.1.0/25", "not authorised", x.own(t, c.Network, "10.60.1.0/25", target.Name, now, false))
	})
	t.Run("path shortening", func(t *testing.T) {
		r := clone(got)
		r.Path = r.Path[:1] // as if rt-1 had sent it to mallory
		refused(t, "10.60.1.0/24", "bad path", forward(r, target.Name))
	})
	t.Run("path insertion", func(t *testing.T) {
		r := clone(got)
		fake := r.Path[len(r.Path)-1]
		fake.Node, fake.Target = "mallory", "rt-7"
		r.Path = append(r.Path, fake)
		refused(t, "10.60.1.0/24", "bad path", forward(r, target.Name))
	})
	t.Run("a forged origin signature", func(t *testing.T) {
		r := x.own(t, c.Network, "192.0.2.0/24", target.Name, now, false)
		r.Sig[len(r.Sig)/2] ^= 0x40
		refused(t, "192.0.2.0/24", "bad signature", r)
	})
	t.Run("a tampered attribute", func(t *testing.T) {
		r := x.own(t, c.Network, "192.0.2.64/26", target.Name, now, false)
		r.NextHop = "198.51.100.1"
		refused(t, "192.0.2.64/26", "bad signature", r)
	})
	t.Run("a stale replay", func(t *testing.T) {
		refused(t, "192.0.2.128/26", "replay window", x.own(t, c.Network, "192.0.2.128/26", target.Name, now.Add(-25*time.Hour), false))
	})
	t.Run("a path replayed to another neighbour", func(t *testing.T) {
		refused(t, "192.0.2.192/26", "signed for rt-1", x.own(t, c.Network, "192.0.2.192/26", "rt-1", now, false))
	})
	t.Run("a route leak", func(t *testing.T) {
		refused(t, "198.51.100.0/24", "route leak", x.own(t, c.Network, "198.51.100.0/24", target.Name, now, true))
	})
	t.Run("a stripped signature", func(t *testing.T) {
		r := x.own(t, c.Network, "203.0.113.0/24", target.Name, now, false)
		r.Path[0].Sig = nil
		refused(t, "203.0.113.0/24", "signature missing", r)
	})
	t.Run("an UPDATE that does not decode", func(t *testing.T) {
		before := agentMetric(t, target, `keymesh_route_updates_total{result="malformed"}`)
		p.send(session.MsgUpdate, session.Update{Payload: []byte{0xa1, 0x01, 0x9f}}) // an indefinite-length array
		for deadline := time.Now().Add(30 * time.Second); agentMetric(t, target, `keymesh_route_updates_total{result="malformed"}`) <= before; {
			if time.Now().After(deadline) {
				t.Fatal("a malformed UPDATE was not counted")
			}
			time.Sleep(10 * time.Millisecond) // polling a process
		}
	})
	if n := agentMetric(t, target, `keymesh_routes_refused_total{reason="signature"}`); n < 2 {
		t.Errorf("%d signature refusals counted", n)
	}
	t.Run("a prefix flood", func(t *testing.T) {
		var flood []*routing.Route
		for i := range 21 {
			flood = append(flood, x.own(t, c.Network, fmt.Sprintf("100.64.%d.0/24", i), target.Name, now, false))
		}
		p.update(flood...)
		n := p.notification()
		if n.Code != session.CodeCease || n.Subcode != session.SubCeaseMaxPrefixes {
			t.Fatalf("ended with %s, want cease/max-prefixes", n)
		}
		// Held down: mallory's next session is refused.
		q, err := dialPeer(t, c, res.Listen, "127.0.0.22", x)
		if err != nil {
			t.Fatal(err)
		}
		q.send(session.MsgOpen, session.Open{NodeID: x.id, Network: c.Network, HoldTime: 30, Role: session.RoleCustomer, Token: x.token(t, aud, x.chain[0], time.Now())})
		if n := q.notification(); n.Code != session.CodeCease || n.Subcode != session.SubCeaseRejected {
			t.Fatalf("a session during the hold-down: %s, want cease/rejected", n)
		}
		c.WaitBest(target, "100.64.0.0/24", 30*time.Second, "the flood's routes gone", func(b *routing.RouteStatus) bool { return b == nil })
		if b, _ := target.Best(context.Background(), "10.60.1.0/24"); b == nil || b.Origin != "rt-1" {
			t.Fatalf("the honest route went with the flood: %+v", b)
		}
	})
	if !target.Running() {
		t.Fatal("the target died")
	}
}
