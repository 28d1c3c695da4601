package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// TestAuthenticatedMembership: members with a proof join one another's
// graph; one that holds the gossip key (leaked) but no valid membership
// proof does not, nor does a revoked node, nor a node of another network;
// a killed member goes suspect, then dead.
func TestAuthenticatedMembership(t *testing.T) {
	m := newTestMesh(t)
	a, b, c := m.node("a"), m.node("b"), m.node("c")
	a.start(nil)
	b.start(nil, a)
	c.start(nil, a)
	for _, n := range []*testNode{a, b, c} {
		for _, o := range []string{"a", "b", "c"} {
			n.waitState(o, StateAlive)
		}
	}
	if addr, ok := c.g.Addr("b"); !ok || addr != b.g.advertised() {
		t.Fatalf("c's graph has b at %q", addr)
	}

	// The leaked key: x is no registered node; its proof is signed by a
	// key the trust state does not know.
	x := m.node("x")
	stranger := newTestMesh(t).node("x") // same name, another CA's key
	x.signer = stranger.signer
	x.start(nil, a)
	x.refusedBy(t, a, 0)

	// A revoked node does not rejoin.
	r := m.node("r")
	m.apply(trust.Records{Revocations: []fsm.Revocation{{Kind: fsm.RevocationNode, ID: "r", Time: time.Now()}}})
	a.verifier.Invalidate()
	before := a.g.Counts()["member_refused"]
	r.start(nil, a)
	r.refusedBy(t, a, before)

	// A killed member: suspect, then dead, at the test's timers.
	start := time.Now()
	c.kill()
	suspected := waitAny(t, []*testNode{a, b}, "c", StateSuspect)
	a.waitState("c", StateDead)
	b.waitState("c", StateDead)
	t.Logf("a killed member was suspect after %s and dead in a's graph after %s (probe 100ms, suspicion x2)",
		suspected.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// waitAny waits until one of nodes shows member in state (polling: the
// state comes from memberlist's goroutines).
func waitAny(t *testing.T, nodes []*testNode, member string, want MemberState) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			for _, mb := range n.g.Members() {
				if mb.Node == member && mb.State == want {
					return time.Now()
				}
			}
		}
		time.Sleep(2 * time.Millisecond) // memberlist's own goroutines
	}
	t.Fatalf("no member showed %s %s", member, want)
	return time.Time{}
}

// refusedBy waits until o has refused a member since before (its
// counter), and checks that n is not in o's graph.
func (n *testNode) refusedBy(t *testing.T, o *testNode, before uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for o.g.Counts()["member_refused"] <= before {
		if time.Now().After(deadline) {
			t.Fatalf("%s's alive message never reached %s", n.id, o.id)
		}
		time.Sleep(10 * time.Millisecond) // memberlist's own goroutines
	}
	for _, mb := range o.g.Members() {
		if mb.Node == n.id {
			t.Fatalf("%s entered %s's graph: %+v", n.id, o.id, mb)
		}
	}
}

// TestOtherNetworkNeverMerges: a node of another network, even with the
// same gossip key, speaks under another Label and never enters the graph;
// a proof naming another network under this Label is refused too.
func TestOtherNetworkNeverMerges(t *testing.T) {
	m := newTestMesh(t)
	a := m.node("a")
	a.start(nil)
	o := m.node("o")
	o.start(func(c *Config) { c.Network = "other.example.net" }, a) // its join has failed once started
	for _, x := range [][2]*testNode{{a, o}, {o, a}} {
		for _, mb := range x[0].g.Members() {
			if mb.Node == x[1].id {
				t.Fatalf("%s has %s in its graph", x[0].id, x[1].id)
			}
		}
	}
	if n := a.g.mlp.Load().NumMembers(); n != 1 {
		t.Fatalf("a's memberlist holds %d members", n)
	}
	p := m.node("p")
	signer := p.signer
	// p's proof says another network; the Label is this one's.
	proof, err := NewProof(signer, "other.example.net", "127.0.0.1:9", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	anchors, _ := trust.Anchors(m.view(), testNetwork)
	if err := proof.Verify(context.Background(), a.verifier, anchors.Accepted, "p", "127.0.0.1:9", time.Now()); !errors.Is(err, ErrNetwork) {
		t.Fatalf("%v, want ErrNetwork", err)
	}
}

// TestBulletinsSpread: a bulletin published by one member reaches the
// others, each applying it once; what does not verify is dropped,
// silently, and counted by reason; a member flooding bulletins is rate
// limited.
func TestBulletinsSpread(t *testing.T) {
	m := newTestMesh(t)
	a, b, c := m.node("a"), m.node("b"), m.node("c")
	a.start(nil)
	b.start(nil, a)
	c.start(nil, b)
	c.waitState("a", StateAlive)
	good := m.bulletin(10, 12, Revocation{Kind: "node", ID: "z", Time: time.Now().Unix()})
	if err := a.g.Publish(good); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{b, c} {
		select {
		case got := <-n.got:
			if got.To != 12 || got.Revocations[0].ID != "z" {
				t.Fatalf("%s got %+v", n.id, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never got the bulletin", n.id)
		}
	}

	deliver := func(n *testNode, relayer string, b Bulletin) {
		enc, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := encMode.Marshal(envelope{Relayer: relayer, Bulletin: enc})
		n.g.receive(append([]byte{msgBulletin}, msg...))
	}
	forged := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k1", Time: time.Now().Unix()})
	forged.Revocations[0].ID = "k2"
	other := newTestMesh(t)
	foreign := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k3", Time: time.Now().Unix()})
	foreign.Network = "other.example.net"
	if err := SignBulletin(&foreign, m.issuer.Cert, m.issuer.Key); err != nil {
		t.Fatal(err)
	}
	foreignIssuer := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k4", Time: time.Now().Unix()})
	if err := SignBulletin(&foreignIssuer, other.issuer.Cert, other.issuer.Key); err != nil {
		t.Fatal(err)
	}
	stale := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k5", Time: time.Now().Unix()})
	stale.Time = time.Now().Add(-time.Hour).Unix()
	if err := SignBulletin(&stale, m.issuer.Cert, m.issuer.Key); err != nil {
		t.Fatal(err)
	}
	unsigned := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k6", Time: time.Now().Unix()})
	unsigned.Sig = nil
	replayed := m.bulletin(3, 4, Revocation{Kind: "key", ID: "k7", Time: time.Now().Unix()})
	byRoot := m.bulletin(13, 13, Revocation{Kind: "key", ID: "k8", Time: time.Now().Unix()})
	if err := SignBulletin(&byRoot, m.root.Cert, m.root.Key); err != nil {
		t.Fatal(err)
	}
	for _, cs := range []struct {
		name, reason string
		b            Bulletin
	}{
		{"forged", "signature", forged},
		{"of another network", "other_network", foreign},
		{"by another network's issuer", "issuer", foreignIssuer},
		{"stale", "stale", stale},
		{"unsigned", "unsigned", unsigned},
		{"replayed", "replayed", replayed},
		{"signed by the AS root itself", "issuer", byRoot},
	} {
		t.Run(cs.name, func(t *testing.T) {
			before := c.g.Counts()[cs.reason]
			applied := func() uint64 { return 5 }
			c.g.cfg.Applied = applied
			deliver(c, "r-"+strings.ReplaceAll(cs.name, " ", "-")[:3], cs.b)
			if got := c.g.Counts()[cs.reason]; got != before+1 {
				t.Fatalf("dropped as %s: %d, was %d (counts %v)", cs.reason, got, before, c.g.Counts())
			}
			select {
			case got := <-c.got:
				t.Fatalf("applied: %+v", got)
			default:
			}
		})
	}
	// A bulletin too large for a gossip packet is refused at the source.
	var many []Revocation
	for i := range 40 {
		many = append(many, Revocation{Kind: "token", ID: fmt.Sprintf("jti-%d", i), Time: time.Now().Unix()})
	}
	if err := a.g.Publish(m.bulletin(60, 60, many...)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a large bulletin: %v, want ErrTooLarge", err)
	}
	// A flood from one relayer: past its burst, rate limited before any
	// signature is checked.
	before := c.g.Counts()["rate_limited"]
	for i := range 30 {
		deliver(c, "flooder", m.bulletin(uint64(100+i), uint64(100+i), Revocation{Kind: "token", ID: "j", Time: time.Now().Unix()}))
	}
	if got := c.g.Counts()["rate_limited"] - before; got < 15 {
		t.Fatalf("%d of 30 bulletins from one member rate limited", got)
	}
}

// TestPartitionBridged: twenty members, the network cut in two halves but
// for one member in both (as if the roots and half of the agents were cut
// off from the other half); a bulletin published in one half reaches
// every member of the other through the bridge, by the epidemic or at the
// latest by push-pull.
func TestPartitionBridged(t *testing.T) {
	m := newTestMesh(t)
	var nodes []*testNode
	for i := range 20 {
		nodes = append(nodes, m.node(fmt.Sprintf("m%d", i)))
	}
	half := map[string]int{} // address -> 0 (A), 1 (B); the bridge is in neither
	tune := func(c *memberlist.Config) { fast(c); c.PushPullInterval = 300 * time.Millisecond }
	for i, n := range nodes {
		var join []*testNode
		switch {
		case i == 0:
		case i < 10:
			join = []*testNode{nodes[0]}
		case i == 10:
			join = []*testNode{nodes[0]} // before the cut: the bridge
		default:
			join = []*testNode{nodes[10]}
		}
		n.start(func(c *Config) { c.Tune = tune }, join...)
		switch {
		case i < 10:
			half[n.g.advertised()] = 0
		case i > 10:
			half[n.g.advertised()] = 1
		}
	}
	stopAll(t, nodes)
	m.net.mu.Lock()
	m.net.Cut = func(from, to string) bool {
		a, okA := half[from]
		b, okB := half[to]
		return okA && okB && a != b
	}
	m.net.mu.Unlock()
	start := time.Now()
	if err := nodes[0].g.Publish(m.bulletin(50, 50, Revocation{Kind: "node", ID: "stolen", Time: time.Now().Unix()})); err != nil {
		t.Fatal(err)
	}
	var last time.Duration
	for _, n := range nodes[1:] {
		select {
		case <-n.got:
			last = max(last, time.Since(start))
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never got the bulletin across the partition (counts %v)", n.id, n.g.Counts())
		}
	}
	t.Logf("a bulletin reached all 19 other members across the partition in %s", last.Round(time.Millisecond))
}

// TestOldProofReplayed: a member's older proof, shown after a newer one
// was accepted (from its old address, say), is refused; each proof is
// checked once per trust view.
func TestOldProofReplayed(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	a.start(nil)
	node := func(at time.Time) *memberlist.Node {
		p, err := NewProof(b.signer, testNetwork, "127.0.0.1:999", "", at)
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := p.Encode()
		return &memberlist.Node{Name: "b", Addr: []byte{127, 0, 0, 1}, Port: 999, Meta: meta}
	}
	old, cur := node(time.Now().Add(-30*time.Minute)), node(time.Now())
	if err := a.g.checkMember(cur); err != nil {
		t.Fatal(err)
	}
	if err := a.g.checkMember(old); !errors.Is(err, ErrProof) {
		t.Fatalf("an older proof: %v, want ErrProof", err)
	}
	if err := a.g.checkMember(cur); err != nil {
		t.Fatalf("the current proof again: %v", err)
	}
	if err := a.g.checkMember(node(time.Now().Add(-3 * time.Hour))); !errors.Is(err, ErrProof) {
		t.Fatalf("a proof past MaxProofAge: %v", err)
	}
}

// TestSignBulletinsSplits: a batch larger than one gossip message is
// signed as several bulletins, each fitting, each verifying, together
// every revocation once.
func TestSignBulletinsSplits(t *testing.T) {
	m := newTestMesh(t)
	now := time.Now()
	var revs []Revocation
	for i := range 40 {
		revs = append(revs, Revocation{Kind: "key", ID: fmt.Sprintf("kid-%039d", i), Time: now.Unix()})
	}
	bs, err := SignBulletins(testNetwork, 7, 9, revs, now, m.issuer.Cert, m.issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) < 2 {
		t.Fatalf("%d bulletins for 40 revocations", len(bs))
	}
	g, err := New(Config{Node: "n1", Network: testNetwork, Keys: [][]byte{make([]byte, 32)}, Transport: m.net.NewTransport(),
		Signer: func() (Signer, error) { return Signer{}, nil }, Verifier: &identity.Verifier{}, View: m.view,
		Applied: func() uint64 { return 0 }, OnBulletin: func(Bulletin) {}})
	if err != nil {
		t.Fatal(err)
	}
	var got []Revocation
	for _, b := range bs {
		if b.From != 7 || b.To != 9 {
			t.Fatalf("range %d-%d", b.From, b.To)
		}
		if err := b.Verify(m.view(), testNetwork, 6, now); err != nil {
			t.Fatal(err)
		}
		enc, _ := b.Encode()
		if err := g.relay(enc, bulletinID(enc)); err != nil {
			t.Fatalf("a bulletin of %d revocations does not fit: %v", len(b.Revocations), err)
		}
		got = append(got, b.Revocations...)
	}
	if !slices.Equal(got, revs) {
		t.Fatalf("revocations %d, want %d in order", len(got), len(revs))
	}
	if _, err := SignBulletins(testNetwork, 7, 9, []Revocation{{Kind: "key", ID: strings.Repeat("k", 1500), Time: 1}}, now, m.issuer.Cert, m.issuer.Key); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("an oversized revocation: %v", err)
	}
}

// TestKeyRotation: install, use, remove. Members that took the new key
// keep their graph through the rotation; once the old key is removed, a
// member holding only the old key (a revoked node's) cannot join, and one
// with the new key can.
func TestKeyRotation(t *testing.T) {
	m := newTestMesh(t)
	newKey := bytes.Repeat([]byte{0x5e}, 32)
	a, b, c := m.node("a"), m.node("b"), m.node("c")
	a.start(nil)
	b.start(nil, a)
	c.start(nil, a)
	for _, n := range []*testNode{a, b, c} {
		n.waitState("c", StateAlive)
	}
	setAll := func(keys ...[]byte) {
		t.Helper()
		for _, n := range []*testNode{a, b, c} {
			if err := n.g.SetKeys(keys); err != nil {
				t.Fatal(err)
			}
		}
	}
	setAll(testKey, newKey) // install: every member reads both
	setAll(newKey, testKey) // use: every member writes the new key
	// Now a member that holds the new key alone is in at every member.
	early := m.node("early")
	early.start(func(c *Config) { c.Keys = [][]byte{newKey} }, a)
	for _, n := range []*testNode{a, b, c} {
		n.waitState("early", StateAlive)
	}
	setAll(newKey) // remove
	old := m.node("old")
	old.start(nil, a) // its join fails: a reads nothing it sends
	fresh := m.node("fresh")
	fresh.start(func(c *Config) { c.Keys = [][]byte{newKey} }, a)
	for _, n := range []*testNode{a, b, c} {
		for _, o := range []string{"a", "b", "c", "fresh"} {
			n.waitState(o, StateAlive)
		}
		for _, mb := range n.g.Members() {
			if mb.Node == "old" {
				t.Fatalf("the member with the removed key is in %s's graph: %+v", n.id, mb)
			}
		}
	}
	if got := old.g.Members(); len(got) > 1 {
		t.Fatalf("the member with the removed key sees %+v", got)
	}
	if err := a.g.SetKeys(nil); err == nil {
		t.Fatal("an empty keyring was taken")
	}
	if err := a.g.SetKeys([][]byte{make([]byte, 16)}); err == nil {
		t.Fatal("a 16-byte key was taken")
	}
}

// TestLoopbackUDP: members on memberlist's own UDP and TCP transport,
// port 0 taking a free port that the proof names; 0.0.0.0 without an
// advertised address is refused with what to do.
func TestLoopbackUDP(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	udp := func(c *Config) { c.Transport, c.Bind = nil, "127.0.0.1:0" }
	a.start(udp)
	b.start(func(c *Config) { udp(c); c.Join = []string{a.g.Advertised()} })
	a.waitState("b", StateAlive)
	b.waitState("a", StateAlive)
	if addr := a.g.Advertised(); strings.HasSuffix(addr, ":0") {
		t.Fatalf("advertised %s", addr)
	}
	g, err := New(Config{Node: "c", Network: testNetwork, Bind: "0.0.0.0:0", Keys: [][]byte{testKey},
		Signer: func() (Signer, error) { return m.node("c").signer, nil }, Verifier: a.verifier, View: m.view,
		Applied: func() uint64 { return 0 }, OnBulletin: func(Bulletin) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("0.0.0.0 without an advertised address ran")
	}
}

// TestJoinRetried: a member whose join finds no one (the member it names
// starts later) tries again until it is in.
func TestJoinRetried(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	ta := m.net.NewTransport()
	b.start(func(c *Config) { c.Join = []string{ta.Addr()} })
	a.start(func(c *Config) { c.Transport = ta })
	a.waitState("b", StateAlive)
	b.waitState("a", StateAlive)
}
