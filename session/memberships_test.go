package session

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// exclusiveAnchor is the mesh's own anchor with Exclusive set to on.
func (m *testMesh) exclusiveAnchor(on bool) trust.Records {
	return trust.Records{Anchors: []fsm.TrustAnchor{{Network: m.network, Roots: [][]byte{m.root.Cert.Raw}, Accept: []string{m.network}, Exclusive: on}}}
}

// TestExclusiveMembership: an OPEN names the sender's other networks. A
// node whose network requires exclusive membership refuses a peer that
// names any (OPEN/exclusive), takes one that names none, and ends the
// session of a member of others once its network starts to require it.
func TestExclusiveMembership(t *testing.T) {
	m := newTestMesh(t)
	a, b, c := m.node("a"), m.node("b"), m.node("c")
	b.start(b.config())
	cfg := a.config(PeerConfig{ID: "b", Addr: b.addr()})
	cfg.Memberships = []string{"other.example.net"}
	a.start(cfg)
	a.handler.waitUp(t)
	b.handler.waitUp(t)

	m.apply(m.exclusiveAnchor(true))
	if down := b.handler.waitDown(t); !strings.HasPrefix(down, "a: ") {
		t.Fatalf("the session that ended: %q", down)
	}
	if st := b.status(t, "a"); st.LastSent == nil || st.LastSent.Code != "cease/credential-revoked" {
		t.Fatalf("b ended a's session with %+v, want Cease credential-revoked", st.LastSent)
	}
	// a dials again and is refused at its OPEN, each time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := a.status(t, "b")
		if st.LastReceived != nil && st.LastReceived.Code == "open/exclusive" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's redial was not refused as exclusive: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // the speaker reports state only
	}
	if st := b.status(t, "a"); st.State == Established {
		t.Fatalf("b took a member of another network: %+v", st)
	}

	// A raw OPEN naming another network is refused, one naming none taken.
	r, err := m.raw(c, b, "10.3.0.1")
	must(t, err)
	r.openAs(c, b, func(o *Open) { o.Memberships = []string{"x.example.net"} })
	if n := r.notification(); n.Code != CodeOpen || n.Subcode != SubOpenExclusive {
		t.Fatalf("an OPEN naming another membership: %s", n)
	}
	r2, err := m.raw(c, b, "10.3.0.2")
	must(t, err)
	r2.openAs(c, b, nil)
	r2.expect(MsgKeepalive)

	// The requirement lifted, a is taken again.
	m.apply(m.exclusiveAnchor(false))
	for p := b.handler.waitUp(t); p != "a"; p = b.handler.waitUp(t) {
		if p != "c" {
			t.Fatalf("established with %q", p)
		}
	}
}

// TestMembershipsConfig: the speaker takes sorted, distinct other
// networks, never its own.
func TestMembershipsConfig(t *testing.T) {
	m := newTestMesh(t)
	a := m.node("a")
	for _, bad := range [][]string{{m.network}, {"z.example", "a.example"}, {"a.example", "a.example"}, manyNetworks(MaxMemberships + 1)} {
		cfg := a.config()
		cfg.Memberships = bad
		if _, err := New(cfg); err == nil {
			t.Errorf("memberships %v taken", bad)
		}
	}
}

// TestAcceptableCAs: a node tells the client which roots it accepts; a
// dialling node whose certificate chains to none of them fails at its
// own end (ErrPeerNetwork), without presenting it.
func TestAcceptableCAs(t *testing.T) {
	m := newTestMesh(t)
	other := newTestMeshOf(t, "other.example.net")
	b := m.node("b")
	b.start(b.config())
	x := other.node("x")
	// x's network accepts b's (so x takes b's certificate); b's does not
	// accept x's.
	other.apply(trust.Records{Anchors: []fsm.TrustAnchor{
		{Network: other.network, Roots: [][]byte{other.root.Cert.Raw}, Accept: []string{m.network, other.network}},
		{Network: m.network, Roots: [][]byte{m.root.Cert.Raw}, Accept: []string{m.network}}}})
	var v verified
	tr := &transport{network: other.network, creds: x, view: other.view, clock: time.Now}
	nc, err := m.net.Dialer("x")(context.Background(), b.addr())
	must(t, err)
	defer nc.Close()
	tc := tls.Client(nc, tr.client(b.spiffe().String(), &v))
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tc.Handshake()
	if !errors.Is(err, ErrPeerNetwork) {
		t.Fatalf("handshake with a node that accepts none of our roots: %v, want ErrPeerNetwork", err)
	}
	if v.local != nil {
		t.Fatal("the certificate was presented")
	}
	// The roots b names are its network's, made once per trust index.
	bt := &transport{network: m.network, view: m.view}
	pool := bt.acceptedRoots()
	if bt.acceptedRoots() != pool {
		t.Fatal("acceptedRoots made the pool again for the same trust index")
	}
	m.apply(m.exclusiveAnchor(false))
	if bt.acceptedRoots() == pool {
		t.Fatal("acceptedRoots kept the pool of an older trust index")
	}
	//lint:ignore SA1019 a pool of our own, not the system's
	if pool == nil || !slices.ContainsFunc(pool.Subjects(), func(s []byte) bool { return string(s) == string(m.root.Cert.RawSubject) }) {
		t.Fatal("acceptedRoots lacks the network's root")
	}
}
