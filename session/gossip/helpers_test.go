package gossip

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

const testNetwork = "mesh.example.net"

var testKey = bytes.Repeat([]byte{7}, 32)

// testMesh is a network's CA and trust state in memory, and members on
// one memberlist.MockNetwork: real certificates, keys, encryption.
type testMesh struct {
	t      testing.TB
	root   ca.Signer
	issuer ca.Signer
	state  atomic.Pointer[trust.State]
	net    *MemNetwork
}

type testNode struct {
	m        *testMesh
	id       string
	signer   Signer
	verifier *identity.Verifier
	g        *Gossip
	got      chan Bulletin
	stop     func()
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	now := time.Now()
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
	m := &testMesh{t: t, root: root, issuer: ca.Signer{Cert: ic, Key: ik}, net: &MemNetwork{}}
	st, err := trust.NewState(trust.Delta{Network: testNetwork, Index: 1, Reset: true, Put: trust.Records{
		Anchors: []fsm.TrustAnchor{{Network: testNetwork, Roots: [][]byte{root.Cert.Raw}, Accept: []string{testNetwork}}}}})
	if err != nil {
		t.Fatal(err)
	}
	m.state.Store(st)
	return m
}

func (m *testMesh) view() trust.View { return m.state.Load() }

func (m *testMesh) apply(put trust.Records) {
	m.t.Helper()
	cur := m.state.Load()
	next, err := cur.Apply(trust.Delta{Network: testNetwork, Since: cur.Index(), Index: cur.Index() + 1, Put: put})
	if err != nil {
		m.t.Fatal(err)
	}
	m.state.Store(next)
}

// node registers a node (certificate, node record, key in the JWKS) of
// network (its certificate's; "" is the mesh's, registered in its trust
// state).
func (m *testMesh) node(id string) *testNode {
	m.t.Helper()
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	c, err := ca.SignNode(m.issuer, ca.NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: id,
		DNSNames: []string{id + "." + testNetwork}, Validity: 24 * time.Hour, Now: time.Now().Add(-time.Hour)}, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	j, _ := identity.NewJWK(key.Public(), []*x509.Certificate{c, m.issuer.Cert})
	raw, _ := json.Marshal(j)
	kid, _ := identity.Thumbprint(key.Public())
	m.apply(trust.Records{
		Nodes: []fsm.Node{{ID: id, Network: testNetwork, Principal: fsm.PrincipalNode, Status: fsm.NodeActive,
			CertSerial: fsm.FormatSerial(c.SerialNumber), CertExpiry: c.NotAfter}},
		JWKS: []fsm.JWK{{KID: kid, Key: raw, Node: id, State: fsm.JWKActive, NotAfter: c.NotAfter}}})
	keys := &trust.Keys{View: m.view}
	anchors, err := trust.Anchors(m.view(), testNetwork)
	if err != nil {
		m.t.Fatal(err)
	}
	v, err := identity.NewVerifier(identity.VerifierConfig{Keys: keys, Revocations: keys, Anchors: anchors})
	if err != nil {
		m.t.Fatal(err)
	}
	return &testNode{m: m, id: id, signer: Signer{Node: id, KID: kid, Key: key}, verifier: v, got: make(chan Bulletin, 64)}
}

// fast shortens memberlist's timers for tests.
func fast(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 0
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.TCPTimeout = time.Second
}

// start runs n's member, joining join, until the test ends.
func (n *testNode) start(edit func(*Config), join ...*testNode) *Gossip {
	m := n.m
	m.t.Helper()
	tr := m.net.NewTransport()
	cfg := Config{Node: n.id, Network: testNetwork, Transport: tr, Keys: [][]byte{testKey},
		Signer: func() (Signer, error) { return n.signer, nil }, Verifier: n.verifier, View: m.view,
		Applied: func() uint64 { return 0 }, OnBulletin: func(b Bulletin) { n.got <- b }, Tune: fast}
	for _, j := range join {
		cfg.Join = append(cfg.Join, j.g.advertised())
	}
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	n.g = g
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		m.t.Fatalf("%s: %v", n.id, err)
	}
	var once sync.Once
	n.stop = func() { once.Do(func() { cancel(); <-done }) }
	m.t.Cleanup(n.stop)
	return g
}

// kill stops n's member without leaving (a crash).
func (n *testNode) kill() { n.g.crash() }

// waitMembers waits until n's graph has want alive members (polling
// memberlist: its events come on its own goroutines; 10 s at most).
func (n *testNode) waitState(member string, want MemberState) time.Time {
	n.m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, mb := range n.g.Members() {
			if mb.Node == member && mb.State == want {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			n.m.t.Fatalf("%s: %s is not %s: %+v", n.id, member, want, n.g.Members())
		}
		time.Sleep(10 * time.Millisecond) // memberlist has no event to wait on here
	}
}

// bulletin is a bulletin of the mesh's network signed by its issuer now.
func (m *testMesh) bulletin(from, to uint64, revs ...Revocation) Bulletin {
	m.t.Helper()
	b := Bulletin{Network: testNetwork, From: from, To: to, Revocations: revs, Time: time.Now().Unix()}
	if err := SignBulletin(&b, m.issuer.Cert, m.issuer.Key); err != nil {
		m.t.Fatal(err)
	}
	return b
}

// stopAll stops members in parallel when the test ends (each leaving
// waits up to a second for its goodbye).
func stopAll(t testing.TB, nodes []*testNode) {
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			if n.stop != nil {
				wg.Add(1)
				go func() { defer wg.Done(); n.stop() }()
			}
		}
		wg.Wait()
	})
}
