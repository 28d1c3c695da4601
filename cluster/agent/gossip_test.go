package agent_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
)

// fastGossip shortens memberlist's timers for tests.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	// A member refused while this agent's trust state lacked its key (a
	// node registered after this one's first state) is learned again at
	// the next push-pull, as at memberlist's default of 30 s.
	c.PushPullInterval = 500 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.TCPTimeout = time.Second
}

// cutter cuts an agent off from the roots: its queries fail, those in
// flight end at once.
type cutter struct {
	mu  sync.Mutex
	cut bool
	ch  chan struct{} // closed at the cut
}

func (c *cutter) set(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cut && !c.cut {
		close(c.ch)
	}
	if !cut {
		c.ch = make(chan struct{})
	}
	c.cut = cut
}

func (c *cutter) state() (bool, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.cut, c.ch
}

// cutSource is a root server's TrustSource behind a cutter.
type cutSource struct {
	cl  *client.Client
	cut *cutter
}

var errCut = errors.New("cut off from the roots")

func (s cutSource) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	cut, ch := s.cut.state()
	if cut {
		return trust.Delta{}, errCut
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	d, err := s.cl.Trust(ctx, index, wait, full)
	if cut, _ := s.cut.state(); cut {
		return trust.Delta{}, errCut // an answer that came as the cut fell is lost
	}
	return d, err
}

func (s cutSource) Close() { s.cl.Close() }

func cutDial(dir string, cut *cutter) func(string) (agent.TrustSource, error) {
	return func(server string) (agent.TrustSource, error) {
		cert, err := agent.Certificate(dir)
		if err != nil {
			return nil, err
		}
		cl, err := client.New(client.Config{Server: server, CAFile: agent.RootsPath(dir), Certificate: &cert, Timeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		return cutSource{cl: cl, cut: cut}, nil
	}
}

// waitMember waits until a's node graph shows member in state (polling
// the agent: memberlist's events come on its own goroutines).
func waitMember(t *testing.T, a *rtAgent, member string, state gossip.MemberState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, m := range a.Members() {
			if m.Node == member && m.State == state {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's graph never showed %s %s: %+v", a.ID().Name, member, state, a.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitKeyring waits until the agent's keyring (GET /v1/members) satisfies
// cond, and returns the keyring file's contents then.
func waitKeyring(t *testing.T, dir string, what string, cond func(api.GossipKeyring) bool) api.GossipKeyring {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var kr api.GossipKeyring
		b, err := os.ReadFile(agent.GossipKeysPath(dir))
		if err == nil && api.DecodeStrict(b, &kr) == nil && cond(kr) {
			return kr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the keyring in %s never came to %s: %+v", dir, what, kr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentsGossip: agents take the gossip key from the roots over
// mutual TLS (gossip.keys 0600), find each other through gossip, dial a
// peer named by node id alone at the address its proof gives, apply a
// root-signed bulletin that gossip brings while they are cut off from the
// roots, and follow a key rotation (install, use, remove) that a node
// revocation starts by itself; the revoked node is refused the new key.
func TestAgentsGossip(t *testing.T) {
	const step = 300 * time.Millisecond
	e := newRTEnvWith(t, 1, func(o *cluster.Options) { o.GossipKeyStep = step })
	mem := &gossip.MemNetwork{}
	cut2 := &cutter{}
	d1, d2, d3 := e.node("n1"), e.node("n2"), e.node("n3")
	// The registration brought the keyring, over mutual TLS.
	if _, err := os.Stat(agent.GossipKeysPath(d1)); err != nil {
		t.Fatalf("no keyring after the registration: %v", err)
	}
	t1, t2, t3 := mem.NewTransport(), mem.NewTransport(), mem.NewTransport()
	a1 := e.start(d1, agent.RunConfig{GossipTransport: t1, GossipTune: fastGossip, Listen: "127.0.0.1:0"})
	a2 := e.start(d2, agent.RunConfig{GossipTransport: t2, GossipTune: fastGossip, GossipJoin: []string{t1.Addr()},
		Peers: []session.PeerConfig{{ID: "n1"}}, Dial: cutDial(d2, cut2), MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	a3 := e.start(d3, agent.RunConfig{GossipTransport: t3, GossipTune: fastGossip, GossipJoin: []string{t1.Addr()}})
	for _, a := range []*rtAgent{a1, a2, a3} {
		for _, m := range []string{"n1", "n2", "n3"} {
			waitMember(t, a, m, gossip.StateAlive)
		}
	}
	for _, d := range []string{d1, d2, d3} {
		fi, err := os.Stat(agent.GossipKeysPath(d))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("gossip.keys: %v %v", fi, err)
		}
	}
	first := waitKeyring(t, d1, "one key", func(kr api.GossipKeyring) bool { return len(kr.Keys) == 1 })

	// n2 names n1 by node id alone: the address comes from n1's proof.
	deadline := time.Now().Add(20 * time.Second)
	for !established(a2, "n1") {
		if time.Now().After(deadline) {
			t.Fatalf("n2 never peered with n1 by node id: %+v", a2.Speaker().Peers())
		}
		time.Sleep(20 * time.Millisecond)
	}
	members, err := a2.local.Members(e.ctx)
	if err != nil || len(members.Members) != 3 || members.KeyringIndex != first.Index {
		t.Fatalf("members %+v %v", members, err)
	}

	// n2 is cut off from the roots; n3 is revoked. The bulletin n1 gets
	// with its trust answer reaches n2 by gossip.
	cut2.set(true)
	before := a2.Follower().Index()
	start := time.Now()
	revIndex := e.revoke("node", "n3")
	waitTrust(t, a2, "n3 revoked by bulletin", func(v trust.View) bool { _, ok := v.Revoked(fsm.RevocationNode, "n3"); return ok })
	t.Logf("a revocation reached the agent cut off from the roots by gossip %s after the revoke call", time.Since(start).Round(time.Millisecond))
	waitMember(t, a2, "n3", gossip.StateRevoked)
	if a2.Follower().Index() != before {
		t.Fatalf("the bulletin moved the trust index %d -> %d", before, a2.Follower().Index())
	}
	if got := a2.Gossip().Counts()["applied"]; got == 0 {
		t.Fatalf("n2 applied no bulletin: %v", a2.Gossip().Counts())
	}

	// The revocation started a rotation: a new key installed, used, the
	// old one removed; n1 (reaching the roots) follows it. n3 is refused
	// the new keyring (its certificate's node is revoked).
	rotated := waitKeyring(t, d1, "a new primary, the old key gone", func(kr api.GossipKeyring) bool {
		return len(kr.Keys) == 1 && kr.Keys[0].ID != first.Keys[0].ID
	})
	t.Logf("revocation to the old gossip key's removal at n1: %s (step %s)", time.Since(start).Round(time.Millisecond), step)
	// n3's agent still runs (it stops RevokedLinger after its revocation)
	// and its keyring query was waiting when the keyring moved: it got
	// nothing new.
	if b, err := os.ReadFile(agent.GossipKeysPath(d3)); err != nil || strings.Contains(string(b), rotated.Keys[0].ID) {
		t.Fatalf("the revoked node holds the new gossip key: %v", err)
	}
	cert, err := agent.Certificate(d3)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Server: e.servers[0].APIAddr(), CAFile: agent.RootsPath(d3), Certificate: &cert})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.GossipKeys(e.ctx, 0, 0); !errors.Is(err, api.ErrNodeRevoked) && !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("the revoked node asked for the keyring: %v", err)
	}
	// n2, back in reach: its trust sync confirms the revocation, and it
	// takes the new keyring too.
	cut2.set(false)
	waitTrust(t, a2, "the trust sync past the revocation", func(v trust.View) bool {
		_, ok := v.Revoked(fsm.RevocationNode, "n3")
		return v.Index() >= revIndex && ok
	})
	waitKeyring(t, d2, "the rotated keyring", func(kr api.GossipKeyring) bool { return kr.Index >= rotated.Index })
	waitMember(t, a1, "n2", gossip.StateAlive)
}

func established(a *rtAgent, peer string) bool {
	s := a.Speaker()
	if s == nil {
		return false
	}
	for _, p := range s.Peers() {
		if p.ID == peer && p.State == session.Established {
			return true
		}
	}
	return false
}
