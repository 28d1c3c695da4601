package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
	"github.com/keymesh/keymesh/test/harness"
)

// TestNodeOfTwoNetworks: two networks, each a root cluster of its own
// that does not accept the other, and node x a member of both under one
// data directory (a key and certificate per network). One `keymesh node
// run` runs both memberships on one peering port: a-1 dials x in a, x
// dials b-1 in b, and each side sees the certificate of its own network.
// Tokens are minted per network. Nothing crosses between the networks:
// b-2 gets no TLS session with a-1 and no place in a's gossip, neither
// node graph lists the other network's members, and no route of one
// reaches the other through x. Once a requires exclusive membership, a-1
// ends its session with x (whose OPEN names b), x's session in b stays,
// and x's agent no longer starts.
func TestNodeOfTwoNetworks(t *testing.T) {
	A := harness.Start(t, bin, harness.Config{Servers: 1, Network: "a.nets.keymesh.test"})
	B := harness.Start(t, bin, harness.Config{Servers: 1, Network: "b.nets.keymesh.test"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	quiet := []string{"--log-level", "warn"}

	// x joins a, then b into the same data directory.
	dir := A.JoinNode("x", api.CreateJoinTokenRequest{})
	B.JoinNodeAt(B.AnyAPI(nil), dir, "x", B.NodeJoinToken(api.CreateJoinTokenRequest{}))
	bDir := filepath.Join(dir, "networks", B.Network)
	ms, err := agent.Memberships(dir)
	if err != nil || len(ms) != 2 || ms[0].Network != A.Network || ms[1].Network != B.Network || ms[1].Dir != bDir {
		t.Fatalf("memberships of %s: %+v, %v", dir, ms, err)
	}
	certOf := func(d string) (*ca.Identity, string) {
		certs, err := ca.ReadCertsFile(agent.CertPath(d))
		if err != nil {
			t.Fatal(err)
		}
		id, err := ca.IdentityOf(certs[0])
		if err != nil {
			t.Fatal(err)
		}
		kid, _ := identity.Thumbprint(certs[0].PublicKey)
		return &id, kid
	}
	aID, aKID := certOf(dir)
	bID, bKID := certOf(bDir)
	if aID.Network != A.Network || bID.Network != B.Network || aID.Name != "x" || bID.Name != "x" || aKID == bKID {
		t.Fatalf("x's certificates: %v (key %s) and %v (key %s), want one per network with a key each", aID, aKID, bID, bKID)
	}
	if fi, err := os.Stat(agent.KeyPath(bDir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", agent.KeyPath(bDir), fi.Mode(), err)
	}

	b1 := B.RunAgent("b-1", B.JoinNode("b-1", api.CreateJoinTokenRequest{}), append(quiet, "--listen", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0")...)
	B.AwaitGossip(b1, 30*time.Second)
	xListen := harness.FreePort(t)
	x := A.RunAgent("x", dir, append(quiet, "--listen", xListen, "--gossip-addr", "127.0.0.1:0",
		"--peer", "spiffe://"+B.Network+"/node/b-1@"+listenOf(ctx, t, b1))...)
	xA, xB := x, x.In(B.Network)
	xGossip := A.AwaitGossip(x, 30*time.Second)
	a1 := A.RunAgent("a-1", A.JoinNode("a-1", api.CreateJoinTokenRequest{}), append(quiet, "--listen", "127.0.0.1:0",
		"--gossip-addr", "127.0.0.1:0", "--gossip-join", xGossip, "--peer", "x@"+xListen)...)
	a1Gossip := A.AwaitGossip(a1, 30*time.Second)

	// a-1 dials x's one port and reaches x's membership of a; x's
	// membership of b dials b-1. Each peer sees x's certificate of its
	// own network.
	A.WaitEstablished(a1, 1, time.Minute)
	B.WaitEstablished(xB, 1, time.Minute)
	serial := func(d string) string {
		certs, err := ca.ReadCertsFile(agent.CertPath(d))
		if err != nil {
			t.Fatal(err)
		}
		return fsm.FormatSerial(certs[0].SerialNumber)
	}
	peerOf := func(a *harness.Agent, id string) session.PeerStatus {
		res, err := a.Peers(ctx)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		for _, p := range res.Peers {
			if p.ID == id {
				return p
			}
		}
		t.Fatalf("%s has no peer %s: %+v", a.Name, id, res.Peers)
		return session.PeerStatus{}
	}
	if p := peerOf(a1, "x"); p.State != session.Established || p.Certificate != serial(dir) || p.Network != A.Network {
		t.Fatalf("a-1's session with x: %+v, want x's certificate of a (%s)", p, serial(dir))
	}
	if p := peerOf(b1, "x"); p.State != session.Established || p.Certificate != serial(bDir) || p.Network != B.Network {
		t.Fatalf("b-1's session with x: %+v, want x's certificate of b (%s)", p, serial(bDir))
	}
	if p := peerOf(xA, "a-1"); !p.Inbound {
		t.Fatalf("x's membership of a did not take a-1's session on the shared port: %+v", p)
	}

	// Tokens per network: minted with b's key, verified by b-1, refused
	// by a-1; and the other way round.
	bAud := "spiffe://" + B.Network + "/node/b-1"
	aAud := "spiffe://" + A.Network + "/node/a-1"
	tokB := mint(t, dir, B.Network, bAud)
	tokA := mint(t, dir, "", aAud)
	if sub := verifyAt(t, b1, tokB, bAud); sub != "spiffe://"+B.Network+"/node/x" {
		t.Fatalf("b-1 verified x's b token as %q", sub)
	}
	if sub := verifyAt(t, a1, tokA, aAud); sub != "spiffe://"+A.Network+"/node/x" {
		t.Fatalf("a-1 verified x's a token as %q", sub)
	}
	if sub := verifyAt(t, a1, tokB, bAud); sub != "" {
		t.Fatalf("a-1 took x's token of b (a network it does not accept): %s", sub)
	}
	if sub := verifyAt(t, b1, mint(t, dir, "", bAud), bAud); sub != "" {
		t.Fatalf("b-1 took x's token of a: %s", sub)
	}

	// Routes stay in their network. Each network authorizes its own;
	// x originates one in each, the markers: UPDATEs keep their order on
	// a session, so a peer holding x's marker would hold what x's
	// membership had of the other network before it.
	auth := func(c *harness.Cluster, prefix string, origins ...string) {
		if _, err := c.Client(c.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: prefix, Origins: origins, MaxLength: 24}); err != nil {
			t.Fatal(err)
		}
	}
	auth(A, "10.81.0.0/16", "a-1", "x")
	auth(B, "10.82.0.0/16", "b-1", "x")
	announce := func(a *harness.Agent, nlri string) {
		if err := a.Announce(ctx, nlri); err != nil {
			t.Fatalf("%s announcing %s: %v", a.Name, nlri, err)
		}
	}
	announce(a1, "10.81.1.0/24")
	announce(b1, "10.82.1.0/24")
	A.WaitBest(xA, "10.81.1.0/24", 30*time.Second, "a-1's route at x in a", pathIs("a-1"))
	B.WaitBest(xB, "10.82.1.0/24", 30*time.Second, "b-1's route at x in b", pathIs("b-1"))
	announce(xA, "10.81.9.0/24")
	announce(xB, "10.82.9.0/24")
	A.WaitBest(a1, "10.81.9.0/24", 30*time.Second, "x's marker at a-1", pathIs("x"))
	B.WaitBest(b1, "10.82.9.0/24", 30*time.Second, "x's marker at b-1", pathIs("x"))
	for _, c := range []struct {
		a     *harness.Agent
		other string
	}{{a1, "10.82."}, {xA, "10.82."}, {b1, "10.81."}, {xB, "10.81."}} {
		rib, err := c.a.Routes(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rib.Routes {
			if strings.HasPrefix(r.NLRI, c.other) {
				t.Fatalf("%s holds a route of the other network: %+v", c.a.Name, r)
			}
		}
	}

	// b-2, of b alone, gets no TLS session with a-1 (a does not accept b)
	// and no membership of a's gossip.
	b2 := B.RunAgent("b-2", B.JoinNode("b-2", api.CreateJoinTokenRequest{}), append(quiet, "--gossip-addr", "127.0.0.1:0",
		"--gossip-join", a1Gossip, "--peer", "spiffe://"+A.Network+"/node/a-1@"+listenOf(ctx, t, a1))...)
	B.AwaitGossip(b2, 30*time.Second) // its join of a-1 was tried by then
	waitFor(t, 30*time.Second, "b-2's handshake with a-1 refused (network a not accepted)", func() bool {
		return b2.Metric(t, `keymesh_session_handshake_failures_total{reason="network"}`) > 0
	})
	if established(t, a1, "b-2") || established(t, b2, "a-1") {
		t.Fatal("a node of b has a session with a node of a")
	}
	// Node graphs: a's lists a's members only (x as a member of a), b's
	// b's only, to every member.
	A.WaitMember(a1, "x", 30*time.Second, gossip.StateAlive)
	for _, c := range []struct {
		a       *harness.Agent
		network string
	}{{a1, A.Network}, {xA, A.Network}, {b1, B.Network}, {b2, B.Network}} {
		res, err := c.a.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Members {
			if m.Network != c.network || (c.network == A.Network && m.Node == "b-2") {
				t.Fatalf("%s's node graph lists %s of %s", c.a.Name, m.Node, m.Network)
			}
		}
	}

	// a requires exclusive membership: a-1 ends its session with x,
	// whose OPENs name b; x keeps its session in b.
	set := time.Now()
	if _, err := A.Client(A.Leader(10*time.Second)).SetNetworkExclusive(ctx, true); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	waitFor(t, 10*time.Second, "a-1 ending its session with x", func() bool { return !established(t, a1, "x") })
	t.Logf("a-1's session with x ended %s after the exclusive call returned (%s after it was made)",
		time.Since(acked).Round(time.Millisecond), time.Since(set).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "x's OPEN refused as a member of another network", func() bool {
		p := peerOf(a1, "x")
		return p.LastSent != nil && p.LastSent.Code == "open/exclusive"
	})
	if !established(t, xB, "b-1") {
		t.Fatal("x's session in b ended with a's exclusivity")
	}
	// x's agent, restarted once it has kept the requirement, refuses to
	// run both memberships.
	waitFor(t, 10*time.Second, "x's trust state requiring exclusive membership", func() bool { return exclusiveKept(dir, A.Network) })
	A.KillAgent(x)
	A.StartProc(x, "node", "run", "--data-dir", dir, "--log-level", "warn")
	if err := x.Wait(t, 30*time.Second); err == nil {
		t.Fatal("x's agent runs memberships of b and of a, which requires exclusive membership")
	}
	log := x.Log()
	last := log[strings.LastIndex(strings.TrimSpace(log), "\n")+1:]
	if !strings.Contains(last, "requires exclusive membership") {
		t.Fatalf("x's agent stopped for another reason: %s", last)
	}
	// Nor does a node of a, whose agent has followed the requirement,
	// join b under its data directory.
	waitFor(t, 10*time.Second, "a-1's trust state requiring exclusive membership", func() bool { return exclusiveKept(a1.Dir, A.Network) })
	join := exec.Command(bin, "node", "join", "--server", B.AnyAPI(nil), "--ca-hash", B.CAHash, "--network", B.Network,
		"--node-id", "a-1", "--data-dir", a1.Dir, "--token", B.NodeJoinToken(api.CreateJoinTokenRequest{}))
	join.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	if out, err := join.CombinedOutput(); err == nil || !strings.Contains(string(out), "requires exclusive membership") {
		t.Fatalf("a node of a network requiring exclusive membership joining another: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(a1.Dir, "networks")); err == nil {
		t.Fatal("the refused join left a membership directory")
	}
}

// exclusiveKept: the trust state the agent of the node in dir keeps
// (trust.json) says that network requires exclusive membership.
func exclusiveKept(dir, network string) bool {
	doc, err := agent.ReadTrustFile(dir, network)
	if err != nil {
		return false
	}
	st, err := trust.NewState(doc)
	return err == nil && trust.Exclusive(st, network)
}

// mint runs `keymesh token mint` for the node in dir (its membership of
// network; "" its first) and returns the token.
func mint(t *testing.T, dir, network, aud string) string {
	t.Helper()
	args := []string{"token", "mint", "--data-dir", dir, "--aud", aud}
	if network != "" {
		args = append(args, "--network", network)
	}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("keymesh %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// verifyAt runs `keymesh token verify` at a's agent; it returns the
// token's node as a SPIFFE ID, "" when refused.
func verifyAt(t *testing.T, a *harness.Agent, tok, aud string) string {
	t.Helper()
	out, _ := exec.Command(bin, "token", "verify", tok, "--aud", aud, "--data-dir", a.Dir, "--output", "json").Output()
	var res struct {
		Valid         bool
		Node, Network string
		Reason        string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("token verify printed %q: %v", out, err)
	}
	if !res.Valid {
		if res.Reason == "" {
			t.Fatalf("token verify refused without a reason: %s", out)
		}
		return ""
	}
	return "spiffe://" + res.Network + "/node/" + res.Node
}
