package session

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session/memnet"
)

const testNetwork = "mesh.example.net"

// testMesh is a network's CA and trust state in memory, and nodes running
// speakers over a memnet.Network: real certificates, tokens, Cedar and TLS
// 1.3, no sockets.
type testMesh struct {
	t       testing.TB
	network string
	root    ca.Signer
	issuer  ca.Signer
	net     *memnet.Network
	state   atomic.Pointer[trust.State]
	mu      sync.Mutex
	nodes   map[string]*testNode
	policy  *policy.Authorizer
}

type testNode struct {
	m        *testMesh
	id       string
	key      crypto.Signer
	cert     atomic.Pointer[x509.Certificate]
	minter   atomic.Pointer[identity.Minter]
	verifier *identity.Verifier
	speaker  *Speaker
	handler  *recorder
	ln       *memnet.Listener
	stop     func()
	done     chan error
	log      *lockedBuffer
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	return newTestMeshOf(t, testNetwork)
}

// newTestMeshOf is a testMesh of network.
func newTestMeshOf(t testing.TB, testNetwork string) *testMesh {
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
	m := &testMesh{t: t, network: testNetwork, root: root, issuer: ca.Signer{Cert: ic, Key: ik}, net: memnet.New(),
		nodes: map[string]*testNode{}, policy: policy.NewAuthorizer(nil)}
	st, err := trust.NewState(trust.Delta{Network: testNetwork, Index: 1, Reset: true, Put: trust.Records{
		Anchors: []fsm.TrustAnchor{{Network: testNetwork, Roots: [][]byte{root.Cert.Raw}, Accept: []string{testNetwork}}}}})
	if err != nil {
		t.Fatal(err)
	}
	m.state.Store(st)
	return m
}

func (m *testMesh) view() trust.View { return m.state.Load() }

// apply changes the trust state and tells every node.
func (m *testMesh) apply(put trust.Records) {
	m.t.Helper()
	m.mu.Lock()
	cur := m.state.Load()
	next, err := cur.Apply(trust.Delta{Network: m.network, Since: cur.Index(), Index: cur.Index() + 1, Put: put})
	if err != nil {
		m.mu.Unlock()
		m.t.Fatal(err)
	}
	m.state.Store(next)
	nodes := make([]*testNode, 0, len(m.nodes))
	for _, n := range m.nodes {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	for _, n := range nodes {
		n.verifier.Invalidate()
		if n.speaker != nil {
			n.speaker.TrustChanged()
		}
	}
}

// issue makes a node certificate for id, valid for d from now.
func (m *testMesh) issue(key crypto.Signer, id string, notBefore time.Time, d time.Duration) *x509.Certificate {
	m.t.Helper()
	c, err := ca.SignNode(m.issuer, ca.NodeRequest{PublicKey: key.Public(), Network: m.network, NodeID: id,
		DNSNames: []string{id + "." + m.network}, Validity: d, Now: notBefore}, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// node registers a node (certificate, node record, key in the JWKS) and
// makes its verifier; the speaker is made by start.
func (m *testMesh) node(id string) *testNode {
	m.t.Helper()
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	n := &testNode{m: m, id: id, key: key, handler: newRecorder(), log: &lockedBuffer{}}
	n.setCert(m.issue(key, id, time.Now().Add(-time.Minute), time.Hour))
	keys := &trust.Keys{View: m.view}
	anchors, err := trust.Anchors(m.view(), m.network)
	if err != nil {
		m.t.Fatal(err)
	}
	n.verifier, err = identity.NewVerifier(identity.VerifierConfig{Keys: keys, Revocations: keys, Anchors: anchors,
		Audience: []string{identity.SPIFFEID{Network: m.network, Kind: identity.KindNode, Name: id}.String()}})
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.nodes[id] = n
	m.mu.Unlock()
	return n
}

// setCert makes c the node's certificate (a renewal), publishing it.
func (n *testNode) setCert(c *x509.Certificate) {
	m := n.m
	m.t.Helper()
	mt, err := identity.NewMinter(identity.MinterConfig{Key: n.key, Cert: c, Chain: []*x509.Certificate{m.issuer.Cert},
		Principals: []identity.Principal{identity.PrincipalNode}, MinLifetime: time.Second})
	if err != nil {
		m.t.Fatal(err)
	}
	j, err := json.Marshal(mt.JWK())
	if err != nil {
		m.t.Fatal(err)
	}
	n.cert.Store(c)
	n.minter.Store(mt)
	m.apply(trust.Records{
		Nodes: []fsm.Node{{ID: n.id, Network: m.network, Principal: fsm.PrincipalNode, Status: fsm.NodeActive,
			CertSerial: fsm.FormatSerial(c.SerialNumber), CertExpiry: c.NotAfter}},
		JWKS: []fsm.JWK{{KID: mt.KID(), Key: j, Node: n.id, State: fsm.JWKActive, NotAfter: c.NotAfter}}})
}

// Certificate and MintOpen make the node its own Credentials.
func (n *testNode) Certificate() (*tls.Certificate, error) {
	c := n.cert.Load()
	return &tls.Certificate{Certificate: [][]byte{c.Raw, n.m.issuer.Cert.Raw}, PrivateKey: n.key, Leaf: c}, nil
}

func (n *testNode) MintOpen(aud identity.SPIFFEID, cert *x509.Certificate, ttl time.Duration) (string, error) {
	tok, _, err := n.minter.Load().Mint(identity.MintRequest{Audience: []string{aud.String()}, TTL: ttl,
		Principal: identity.PrincipalNode, BindCert: cert})
	return tok, err
}

// spiffe is the node's SPIFFE ID.
func (n *testNode) spiffe() identity.SPIFFEID {
	return identity.SPIFFEID{Network: n.m.network, Kind: identity.KindNode, Name: n.id}
}

// addr is where the node listens.
func (n *testNode) addr() string { return n.ln.Addr().String() }

// config is the node's speaker configuration, listening on the memnet;
// edit tunes it before start.
func (n *testNode) config(peers ...PeerConfig) Config {
	m := n.m
	if n.ln == nil {
		ln, err := m.net.Listen(n.id + ":179")
		if err != nil {
			m.t.Fatal(err)
		}
		n.ln = ln
	}
	return Config{NodeID: n.id, Network: m.network, Listener: n.ln, Dial: m.net.Dialer(n.id), Peers: peers,
		Credentials: n, View: m.view, Verifier: n.verifier, Authorizer: m.policy, Handler: n.handler,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Name: n.id, Level: hclog.Debug, Output: n.log})}
}

// start runs the node's speaker with cfg until the test ends.
func (n *testNode) start(cfg Config) *Speaker {
	n.m.t.Helper()
	s, err := New(cfg)
	if err != nil {
		n.m.t.Fatal(err)
	}
	n.speaker = s
	ctx, cancel := context.WithCancel(context.Background())
	n.done = make(chan error, 1)
	go func() { n.done <- s.Run(ctx) }()
	n.stop = func() {
		cancel()
		if err := <-n.done; err != nil {
			n.m.t.Errorf("speaker %s: %v", n.id, err)
		}
	}
	n.m.t.Cleanup(func() {
		if n.stop != nil {
			n.stop()
			n.stop = nil
		}
		if n.m.t.Failed() {
			n.m.t.Logf("log of %s:\n%s", n.id, n.log.String())
		}
	})
	return s
}

// recorder is a Handler that records sessions and UPDATEs on channels.
type recorder struct {
	up      chan string
	down    chan string
	updates chan []byte
	refresh chan string
}

func newRecorder() *recorder {
	return &recorder{up: make(chan string, 64), down: make(chan string, 64), updates: make(chan []byte, 1024), refresh: make(chan string, 64)}
}

func (r *recorder) Established(p string)      { r.up <- p }
func (r *recorder) Down(p, reason string)     { r.down <- p + ": " + reason }
func (r *recorder) Update(p string, b []byte) { r.updates <- b }
func (r *recorder) RouteRefresh(p string)     { r.refresh <- p }
func (r *recorder) waitUp(t testing.TB) string {
	t.Helper()
	return recv(t, r.up, "a session established")
}
func (r *recorder) waitDown(t testing.TB) string {
	t.Helper()
	return recv(t, r.down, "a session down")
}

// recv waits for the next value on ch (10 s at most).
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		var zero T
		return zero
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

var _ io.Writer = (*lockedBuffer)(nil)

// rawPeer is the client side of a session driven by hand: TLS with a
// node's certificate, then frames as the test writes them.
type rawPeer struct {
	t  testing.TB
	tc *tls.Conn
	fr *FrameReader
}

// raw dials to's listener as node as (TLS done), from source host src.
func (m *testMesh) raw(as *testNode, to *testNode, src string) (*rawPeer, error) {
	m.t.Helper()
	nc, err := m.net.Dialer(src)(context.Background(), to.addr())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(m.root.Cert)
	tc := tls.Client(nc, &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{ALPN}, RootCAs: pool,
		ServerName: to.id + "." + m.network, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return as.Certificate()
		}})
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return nil, err
	}
	m.t.Cleanup(func() { nc.Close() }) // not tc: a close_notify nobody reads would block the pipe
	return &rawPeer{t: m.t, tc: tc, fr: NewFrameReader(tc, DefaultMaxFrame)}, nil
}

func (r *rawPeer) write(b []byte) {
	r.t.Helper()
	if _, err := r.tc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawPeer) send(t MsgType, m any) {
	r.t.Helper()
	body, err := Encode(m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(AppendFrame(nil, t, body))
}

// open sends an OPEN of as to the node (aud) with a fresh bound token.
func (r *rawPeer) openAs(as *testNode, aud *testNode, edit func(*Open)) Open {
	r.t.Helper()
	tok, err := as.MintOpen(aud.spiffe(), as.cert.Load(), time.Minute)
	if err != nil {
		r.t.Fatal(err)
	}
	o := Open{NodeID: as.id, Network: as.m.network, HoldTime: 30, Role: RoleInternal, Token: tok}
	if edit != nil {
		edit(&o)
	}
	r.send(MsgOpen, o)
	return o
}

// notification reads frames until a NOTIFICATION (skipping the node's
// OPEN and KEEPALIVEs) and returns it.
func (r *rawPeer) notification() Notification {
	r.t.Helper()
	for {
		f, err := r.fr.Read()
		if err != nil {
			r.t.Fatalf("no NOTIFICATION before the connection ended: %v", err)
		}
		if f.Type == MsgNotification {
			n, err := DecodeNotification(f.Body)
			if err != nil {
				r.t.Fatal(err)
			}
			return n
		}
	}
}

// expect reads frames until one of type t.
func (r *rawPeer) expect(t MsgType) Frame {
	r.t.Helper()
	for {
		f, err := r.fr.Read()
		if err != nil {
			r.t.Fatalf("no %s before the connection ended: %v", t, err)
		}
		if f.Type == MsgNotification && t != MsgNotification {
			n, _ := DecodeNotification(f.Body)
			r.t.Fatalf("NOTIFICATION %s where %s was expected", n, t)
		}
		if f.Type == t {
			return f
		}
	}
}

// closed checks that the node closed the connection.
func (r *rawPeer) closed() {
	r.t.Helper()
	for {
		if _, err := r.fr.Read(); err != nil {
			return
		}
	}
}

func (n *testNode) status(t testing.TB, peer string) PeerStatus {
	t.Helper()
	for _, p := range n.speaker.Peers() {
		if p.ID == peer {
			return p
		}
	}
	return PeerStatus{ID: peer}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = fmt.Sprintf
