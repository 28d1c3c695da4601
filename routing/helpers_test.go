package routing

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

const testNetwork = "mesh.example.net"

// testMesh is a network's CA and trust state in memory and routers linked
// by in-memory sessions (the twin of session.Speaker: Send delivers to the
// other router, Established and Down are called by link and cut): real
// certificates, keys and signatures, a clock the test moves.
type testMesh struct {
	t       testing.TB
	root    ca.Signer
	issuer  ca.Signer
	state   atomic.Pointer[trust.State]
	clock   atomic.Pointer[time.Time]
	mu      sync.Mutex
	nodes   map[string]*testNode
	links   map[[2]string]bool
	holds   chan string // "peer: reason" of every HoldDown
	windows time.Duration
	keyType ca.KeyType // of the nodes' keys; default P-256
}

type testNode struct {
	m        *testMesh
	id       string
	key      atomic.Pointer[Signer]
	cert     *x509.Certificate
	verifier *identity.Verifier
	val      *Validator
	router   *Router
	roles    sync.Map // peer -> PeerPolicy
	changed  chan struct{}
	locks    []Lock
	inbox    chan []byte // UPDATEs sent to a node that runs no router
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	root, err := ca.NewRoot(testNetwork, now.Add(-6*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ca.SignIntermediate(root, ik.Public(), testNetwork, "r1", now.Add(-6*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &testMesh{t: t, root: root, issuer: ca.Signer{Cert: ic, Key: ik}, nodes: map[string]*testNode{},
		links: map[[2]string]bool{}, holds: make(chan string, 64)}
	m.clock.Store(&now)
	st, err := trust.NewState(trust.Delta{Network: testNetwork, Index: 1, Reset: true, Put: trust.Records{
		Anchors: []fsm.TrustAnchor{{Network: testNetwork, Roots: [][]byte{root.Cert.Raw}, Accept: []string{testNetwork}}}}})
	if err != nil {
		t.Fatal(err)
	}
	m.state.Store(st)
	return m
}

func (m *testMesh) now() time.Time { return *m.clock.Load() }

// advance moves the clock.
func (m *testMesh) advance(d time.Duration) {
	t := m.now().Add(d)
	m.clock.Store(&t)
}

func (m *testMesh) view() trust.View { return m.state.Load() }

// apply changes the trust state and tells every router.
func (m *testMesh) apply(put trust.Records) {
	m.t.Helper()
	m.mu.Lock()
	cur := m.state.Load()
	next, err := cur.Apply(trust.Delta{Network: testNetwork, Since: cur.Index(), Index: cur.Index() + 1, Put: put})
	if err != nil {
		m.mu.Unlock()
		m.t.Fatal(err)
	}
	m.state.Store(next)
	nodes := m.list()
	m.mu.Unlock()
	for _, n := range nodes {
		n.verifier.Invalidate()
		if n.router != nil {
			n.router.TrustChanged()
		}
	}
}

func (m *testMesh) list() []*testNode {
	out := make([]*testNode, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n)
	}
	return out
}

// authorize puts a route authorization in the trust state.
func (m *testMesh) authorize(prefix string, maxLen int, origins ...string) {
	m.apply(trust.Records{RouteAuths: []fsm.RouteAuth{{Prefix: prefix, MaxLength: maxLen, Origins: origins}}})
}

// node registers a node: certificate, node record, key in the JWKS.
func (m *testMesh) node(id string) *testNode {
	m.t.Helper()
	n := &testNode{m: m, id: id, changed: make(chan struct{}, 1), inbox: make(chan []byte, 1024)}
	n.rotate()
	keys := &trust.Keys{View: m.view}
	anchors, err := trust.Anchors(m.view(), testNetwork)
	if err != nil {
		m.t.Fatal(err)
	}
	n.verifier, err = identity.NewVerifier(identity.VerifierConfig{Keys: keys, Revocations: keys, Anchors: anchors, Clock: m.now,
		Audience: []string{identity.SPIFFEID{Network: testNetwork, Kind: identity.KindNode, Name: id}.String()}})
	if err != nil {
		m.t.Fatal(err)
	}
	n.val, err = NewValidator(ValidatorConfig{Node: id, Network: testNetwork, Keys: n.verifier, View: m.view, Clock: m.now, ReplayWindow: m.windows})
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.nodes[id] = n
	m.mu.Unlock()
	return n
}

// rotate gives the node a new key and certificate, published as active;
// the previous key, if any, retires.
func (n *testNode) rotate() {
	m := n.m
	m.t.Helper()
	kt := m.keyType
	if kt == "" {
		kt = ca.KeyP256
	}
	key, err := ca.GenerateKey(kt, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	c, err := ca.SignNode(m.issuer, ca.NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: n.id,
		DNSNames: []string{n.id + "." + testNetwork}, Validity: 24 * time.Hour, Now: m.now().Add(-time.Hour)}, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	j, err := identity.NewJWK(key.Public(), []*x509.Certificate{c, m.issuer.Cert})
	if err != nil {
		m.t.Fatal(err)
	}
	raw, _ := json.Marshal(j)
	kid, _ := identity.Thumbprint(key.Public())
	put := trust.Records{
		Nodes: []fsm.Node{{ID: n.id, Network: testNetwork, Principal: fsm.PrincipalNode, Status: fsm.NodeActive,
			CertSerial: fsm.FormatSerial(c.SerialNumber), CertExpiry: c.NotAfter}},
		JWKS: []fsm.JWK{{KID: kid, Key: raw, Node: n.id, State: fsm.JWKActive, NotAfter: c.NotAfter}}}
	if old := n.key.Load(); old != nil {
		put.JWKS = append(put.JWKS, fsm.JWK{KID: old.KID, Key: n.jwk(old), Node: n.id, State: fsm.JWKRetiring,
			NotAfter: n.cert.NotAfter, RetiringSince: m.now()})
	}
	n.cert = c
	n.key.Store(&Signer{Node: n.id, KID: kid, Key: key})
	m.apply(put)
}

// jwk is the JWKS entry of the node's key s (from the current state).
func (n *testNode) jwk(s *Signer) []byte {
	rec, _ := n.m.view().JWK(s.KID)
	return rec.Key
}

func (n *testNode) signer() (Signer, error) { return *n.key.Load(), nil }

// start makes and runs the node's router until the test ends.
func (n *testNode) start(edit ...func(*RouterConfig)) *Router {
	m := n.m
	m.t.Helper()
	cfg := RouterConfig{Node: n.id, Network: testNetwork, Validator: n.val, Signer: n.signer, Clock: m.now,
		Send: func(peer string, body []byte) error { return m.deliver(n.id, peer, body) },
		HoldDown: func(peer, reason string, d time.Duration) error {
			m.holds <- peer + ": " + reason
			m.cut(n.id, peer)
			return nil
		},
		Policy: func(peer string) PeerPolicy {
			if p, ok := n.roles.Load(peer); ok {
				return p.(PeerPolicy)
			}
			return PeerPolicy{}
		},
		Locks: n.locks,
		OnChange: func() {
			select {
			case n.changed <- struct{}{}:
			default:
			}
		}}
	for _, e := range edit {
		e(&cfg)
	}
	r, err := NewRouter(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	n.router = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	m.t.Cleanup(func() { cancel(); <-done })
	return r
}

// link brings a session up between a and b; role is what b is to a.
func (m *testMesh) link(a, b *testNode, role Role, edit ...func(*PeerPolicy)) {
	pa := PeerPolicy{Role: role}
	pb := PeerPolicy{Role: counterpart(role)}
	for _, e := range edit {
		e(&pa)
		e(&pb)
	}
	a.roles.Store(b.id, pa)
	b.roles.Store(a.id, pb)
	m.mu.Lock()
	m.links[key2(a.id, b.id)] = true
	m.mu.Unlock()
	for _, x := range [][2]*testNode{{a, b}, {b, a}} {
		if x[0].router != nil {
			x[0].router.Established(x[1].id)
		}
	}
}

// inject hands r the UPDATE body of routes and withdrawals as if peer sent
// it on its session.
func (n *testNode) inject(peer string, announce []*Route, withdraw ...string) {
	n.m.t.Helper()
	var u Update
	for _, r := range announce {
		u.Announce = append(u.Announce, *r)
	}
	for _, w := range withdraw {
		u.Withdraw = append(u.Withdraw, MustNLRI(w))
	}
	body, err := EncodeUpdate(u)
	if err != nil {
		n.m.t.Fatal(err)
	}
	n.router.Update(peer, body)
}

func counterpart(r Role) Role {
	switch r {
	case RoleProvider:
		return RoleCustomer
	case RoleCustomer:
		return RoleProvider
	}
	return r
}

// cut ends the session between a and b.
func (m *testMesh) cut(a, b string) {
	m.mu.Lock()
	up := m.links[key2(a, b)]
	delete(m.links, key2(a, b))
	na, nb := m.nodes[a], m.nodes[b]
	m.mu.Unlock()
	if up {
		for _, x := range []struct {
			n    *testNode
			peer string
		}{{na, b}, {nb, a}} {
			if x.n.router != nil {
				x.n.router.Down(x.peer, "cut")
			}
		}
	}
}

func key2(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// deliver is a session's Send: the UPDATE reaches the other router if the
// session is up.
func (m *testMesh) deliver(from, to string, body []byte) error {
	m.mu.Lock()
	up := m.links[key2(from, to)]
	n := m.nodes[to]
	m.mu.Unlock()
	if !up {
		return errNotUp
	}
	if n.router == nil {
		n.inbox <- slices.Clone(body)
		return nil
	}
	n.router.Update(from, slices.Clone(body))
	return nil
}

var errNotUp = errorString("session not established")

type errorString string

func (e errorString) Error() string { return string(e) }

// routes is the node's RIB now.
func (n *testNode) routes(peer string) []RouteStatus {
	n.m.t.Helper()
	rs, err := n.router.Routes(context.Background(), peer)
	if err != nil {
		n.m.t.Fatal(err)
	}
	return rs
}

// best is the node's best route for nlri, or nil.
func (n *testNode) best(nlri string) *RouteStatus {
	for _, r := range n.routes("") {
		if r.NLRI == nlri && r.Best {
			return &r
		}
	}
	return nil
}

// waitFor waits until cond holds on the node's RIB, woken by its changes
// (10 s at most).
func (n *testNode) waitFor(what string, cond func() bool) {
	n.m.t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-n.changed:
		case <-deadline:
			n.m.t.Fatalf("%s: %s did not happen; RIB: %+v", n.id, what, n.routes(""))
		}
	}
}

// waitPath waits until the node's best route for nlri has path (nil: no
// route).
func (n *testNode) waitPath(nlri string, path ...string) {
	n.m.t.Helper()
	n.waitFor("best "+nlri+" via "+join(path), func() bool {
		b := n.best(nlri)
		if path == nil {
			return b == nil
		}
		return b != nil && slices.Equal(b.Path, path)
	})
}

func join(p []string) string {
	out := ""
	for i, s := range p {
		if i > 0 {
			out += ">"
		}
		out += s
	}
	return out
}

// signed makes a route of origin, signed by it now.
func (n *testNode) signed(nlri string, seq uint64, at time.Time) *Route {
	n.m.t.Helper()
	r := &Route{NLRI: MustNLRI(nlri), Origin: n.id, Network: testNetwork, SignedAt: at.Unix(), Seq: seq}
	if err := r.Sign(*n.key.Load()); err != nil {
		n.m.t.Fatal(err)
	}
	return r
}

// forward appends n's segment to target.
func (n *testNode) forward(r *Route, target string, otc bool) *Route {
	n.m.t.Helper()
	f, err := r.Forward(*n.key.Load(), target, otc)
	if err != nil {
		n.m.t.Fatal(err)
	}
	return f
}
