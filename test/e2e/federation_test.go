package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/test/harness"
)

// TestFederation: two networks, each a root cluster of its own with its
// nodes, as processes. Before they anchor each other, a node of one gets
// no session with a node of the other (the handshake refuses a network
// not on the access list). Once each `trust add`s the other with its
// roots' endpoints, the leaders follow each other's published JWKS, the
// nodes peer and exchange routes (each signature verified with the other
// network's key). A node narrowed to its own network (--accept-network)
// still refuses the other. After `trust remove` the session ends and the
// other network's route is withdrawn within 1 s of the call's return.
func TestFederation(t *testing.T) {
	A := harness.Start(t, bin, harness.Config{Servers: 1, Network: "a.e2e.keymesh.test"})
	B := harness.Start(t, bin, harness.Config{Servers: 1, Network: "b.e2e.keymesh.test"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// a-3 is a-1's provider (each configures the other so): a route a-1
	// learns from it goes to a-1's customers and internal neighbours, not
	// to a lateral peer.
	a3 := A.RunAgent("a-3", A.JoinNode("a-3", api.CreateJoinTokenRequest{}), "--listen", "127.0.0.1:0", "--log-level", "warn",
		"--peer", "a-1,role=customer")
	a1 := A.RunAgent("a-1", A.JoinNode("a-1", api.CreateJoinTokenRequest{}), "--listen", "127.0.0.1:0", "--log-level", "warn",
		"--peer", "a-3@"+listenOf(ctx, t, a3)+",role=provider")
	res, err := a1.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A node of another network is configured by its SPIFFE ID (a node id
	// alone names a node of the own network); a node takes one it has not
	// configured as a lateral peer, so the role here is peer too.
	b1 := B.RunAgent("b-1", B.JoinNode("b-1", api.CreateJoinTokenRequest{}), "--listen", "127.0.0.1:0", "--log-level", "warn",
		"--peer", "spiffe://"+A.Network+"/node/a-1@"+res.Listen+",role=peer") // a-1 takes an unconfigured federated node as a peer
	networkRefused := `keymesh_session_handshake_failures_total{reason="network"}`
	waitFor(t, 30*time.Second, "a-1 refusing b-1's handshake (network b not accepted)", func() bool {
		return a1.Metric(t, networkRefused) > 0 || b1.Metric(t, networkRefused) > 0
	})
	if established(t, a1, "b-1") {
		t.Fatal("a-1 has a session with a node of a network it does not accept")
	}

	// Federation, both ways, with the endpoints of each other's roots.
	anchor := func(at, of *harness.Cluster) {
		pem, err := os.ReadFile(of.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := at.Client(at.Leader(10*time.Second)).PutAnchor(ctx, of.Network, pem, of.Roots[0].APIAddr); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	anchor(A, B)
	anchor(B, A)
	A.WaitFederatedKeys(B.Network, 30*time.Second)
	B.WaitFederatedKeys(A.Network, 30*time.Second)
	A.WaitEstablished(a1, 1, time.Minute)
	t.Logf("federated nodes established a session %s after the two trust add calls", time.Since(start).Round(time.Millisecond))

	// Routes both ways: a-1's authorized in a, b-1's in b; each side
	// validates the other's signature with the federated key.
	if _, err := A.Client(A.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.61.0.0/16", Origins: []string{"a-1"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	if err := a1.Announce(ctx, "10.61.1.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := b1.Announce(ctx, "10.62.1.0/24"); err != nil {
		t.Fatal(err)
	}
	B.WaitBest(b1, "10.61.1.0/24", 30*time.Second, "a-1's route at b-1", pathIs("a-1"))
	A.WaitBest(a1, "10.62.1.0/24", 30*time.Second, "b-1's route at a-1", pathIs("b-1"))

	// b-1 is a lateral peer to a-1 (not configured there, of another
	// network): a-1 does not pass it its provider a-3's route. A route
	// a-1 announces after it has a-3's is the marker: UPDATEs keep their
	// order, so once b-1 holds the marker it would hold a-3's.
	if _, err := A.Client(A.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.63.0.0/16", Origins: []string{"a-3"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	if err := a3.Announce(ctx, "10.63.1.0/24"); err != nil {
		t.Fatal(err)
	}
	A.WaitBest(a1, "10.63.1.0/24", 30*time.Second, "a-3's route at a-1", pathIs("a-3"))
	if err := a1.Announce(ctx, "10.61.2.0/24"); err != nil {
		t.Fatal(err)
	}
	B.WaitBest(b1, "10.61.2.0/24", 30*time.Second, "a-1's marker route at b-1", pathIs("a-1"))
	rib, err := b1.Routes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rib.Routes {
		if r.NLRI == "10.63.1.0/24" {
			t.Fatalf("a-1 passed its provider's route to a federated lateral peer: %+v", r)
		}
	}

	// A node of a narrowed to its own network refuses b-1 at the handshake.
	a2 := A.RunAgent("a-2", A.JoinNode("a-2", api.CreateJoinTokenRequest{}), "--log-level", "warn",
		"--accept-network", A.Network, "--peer", "spiffe://"+B.Network+"/node/b-1@"+listenOf(ctx, t, b1))
	waitFor(t, 30*time.Second, "a-2 (--accept-network a) refusing b-1", func() bool { return a2.Metric(t, networkRefused) > 0 })
	if established(t, a2, "b-1") {
		t.Fatal("a-2, narrowed to its own network, has a session with b-1")
	}

	// trust remove: the session ends, b-1's route leaves a-1.
	if !established(t, a1, "b-1") {
		t.Fatal("a-1's session with b-1 is down before trust remove")
	}
	leader := A.Client(A.Leader(10 * time.Second))
	called := time.Now()
	if _, err := leader.DeleteAnchor(ctx, B.Network); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	var down time.Time
	waitFor(t, 10*time.Second, "a-1's session with b-1 ending", func() bool {
		down = time.Now()
		return !established(t, a1, "b-1")
	})
	withdrawn := A.WaitBest(a1, "10.62.1.0/24", 10*time.Second, "b-1's route withdrawn at a-1", gone)
	t.Logf("trust remove took %s; the session was down %s and the route withdrawn %s after the call returned (%s and %s after it was made)",
		acked.Sub(called).Round(time.Millisecond), down.Sub(acked).Round(time.Millisecond), withdrawn.Sub(acked).Round(time.Millisecond),
		down.Sub(called).Round(time.Millisecond), withdrawn.Sub(called).Round(time.Millisecond))
	if d := max(down.Sub(acked), withdrawn.Sub(acked)); d > time.Second {
		t.Errorf("the other network's session or route stayed %s after trust remove, want <= 1s", d)
	}
}

// waitFor polls cond (processes have no event to wait on) until timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling a process
	}
}

// established: a has an established session with node peer (an agent
// names a peer of another network by its SPIFFE ID).
func established(t *testing.T, a *harness.Agent, peer string) bool {
	t.Helper()
	res, err := a.Peers(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", a.Name, err)
	}
	for _, p := range res.Peers {
		id, err := identity.ParseSPIFFEID(p.ID)
		if (p.ID == peer || err == nil && id.Name == peer) && p.State == session.Established {
			return true
		}
	}
	return false
}

func listenOf(ctx context.Context, t *testing.T, a *harness.Agent) string {
	t.Helper()
	res, err := a.Peers(ctx)
	if err != nil || res.Listen == "" {
		t.Fatalf("%s takes no sessions: %v", a.Name, err)
	}
	return res.Listen
}
