package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
	"github.com/keymesh/keymesh/test/harness"
)

// TestGossip: GOSSIP_AGENTS node agents (default 20) as processes gossip
// on loopback UDP and TCP at memberlist's default LAN settings.
//
//   - Every agent's graph holds every other, authenticated; each agent
//     dials the first by node id alone (--peer gossip-1), at the address
//     the first one's membership proof names.
//   - A killed agent is marked suspect by the agents whose probes of it
//     fail, then dead by every other, and the first one's session with it
//     is down: the detection time is logged.
//   - The odd-numbered half reaches the roots only through relays that are
//     then cut; a node of the other half is revoked, and the revocation
//     reaches every agent of the cut-off half by gossip (a root-signed
//     bulletin) without their trust state moving: the time is logged.
func TestGossip(t *testing.T) {
	n := 20
	if v, err := strconv.Atoi(os.Getenv("GOSSIP_AGENTS")); err == nil && v >= 6 {
		n = v
	}
	c := harness.StartCluster(t, bin, 3)
	var relays []*harness.Relay
	for _, r := range c.Roots {
		relays = append(relays, harness.NewRelay(t, r.APIAddr))
	}
	start := time.Now()
	mesh := c.StartGossip("gossip", n, func(i int) []string {
		args := []string{"--log-level", "warn"}
		if i == 0 {
			return append(args, "--listen", "127.0.0.1:0")
		}
		args = append(args, "--peer", "gossip-1")
		if i%2 == 1 {
			for _, r := range relays {
				args = append(args, "--server", r.Addr())
			}
			args = append(args, "--pin-servers")
		}
		return args
	})
	for _, a := range mesh {
		for _, m := range mesh {
			c.WaitMember(a, m.Name, time.Minute, gossip.StateAlive)
		}
	}
	t.Logf("%d agents gossip, every graph complete, %s after the first started", n, time.Since(start).Round(time.Millisecond))
	c.WaitEstablished(mesh[0], n-1, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := mesh[1].Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Members {
		if m.Network != c.Network || m.Addr == "" || m.Since.IsZero() {
			t.Fatalf("member %+v", m)
		}
		if m.Node == "gossip-1" && m.Peer == "" {
			t.Fatalf("gossip-1's proof names no peering address: %+v", m)
		}
	}

	// Failure detection at the default LAN settings.
	dead := mesh[5]
	c.KillAgent(dead)
	killed := time.Now()
	type seen struct{ suspect, dead time.Duration }
	results := make(chan seen, n)
	for _, a := range mesh {
		if a == dead {
			continue
		}
		go func() {
			var r seen
			deadline := time.Now().Add(time.Minute)
			for r.dead == 0 && time.Now().Before(deadline) {
				res, err := a.Members(ctx)
				for _, m := range res.Members {
					if err != nil || m.Node != dead.Name {
						continue
					}
					if m.State == gossip.StateSuspect && r.suspect == 0 {
						r.suspect = time.Since(killed)
					}
					if m.State == gossip.StateDead {
						r.dead = time.Since(killed)
					}
				}
				time.Sleep(20 * time.Millisecond) // polling a process
			}
			results <- r
		}()
	}
	var suspect, gone []time.Duration
	for range n - 1 {
		r := <-results
		if r.dead == 0 {
			t.Fatalf("an agent never saw %s dead", dead.Name)
		}
		gone = append(gone, r.dead)
		if r.suspect > 0 {
			suspect = append(suspect, r.suspect)
		}
	}
	if len(suspect) == 0 {
		t.Fatalf("no agent saw %s suspect before dead", dead.Name)
	}
	peers, err := mesh[0].Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers.Peers {
		if p.ID == dead.Name && p.State == session.Established {
			t.Fatalf("%s's session with the dead %s is still established", mesh[0].Name, dead.Name)
		}
	}
	t.Logf("a killed agent (default LAN settings, %d members): suspect after %s at the %d agents whose probes failed, dead after p50 %s / max %s at all %d others",
		n, pct(suspect, 0), len(suspect), pct(gone, 50), pct(gone, 100), len(gone))

	// The roots cut off from the odd half; a node of the even half is
	// revoked.
	var cutOff []*harness.Agent
	before := map[string]uint64{}
	for i, a := range mesh {
		if i%2 == 1 && a != dead {
			cutOff = append(cutOff, a)
		}
	}
	for _, r := range relays {
		r.Cut()
	}
	for _, a := range cutOff {
		before[a.Name] = status(t, ctx, a).Trust.Index
	}
	victim := mesh[2]
	cl := c.Client(c.Leader(10 * time.Second))
	kr0, err := cl.GossipKeyring(ctx)
	if err != nil || len(kr0.Keys) != 1 {
		t.Fatalf("keyring before the revocation: %+v %v", kr0, err)
	}
	old := kr0.Keys[0].ID
	if _, err := c.Client(c.Leader(10*time.Second)).Revoke(ctx, api.RevokeRequest{Kind: "node", ID: victim.Name, Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	var watched []*harness.Agent
	for _, a := range mesh {
		if a != dead && a != victim {
			watched = append(watched, a)
		}
	}
	at := seenAt(t, ctx, watched, victim.Name, acked, gossip.StateRevoked)
	var synced, bulletin []time.Duration
	for i, a := range mesh {
		if d, ok := at[a.Name]; ok && i%2 == 1 {
			bulletin = append(bulletin, d)
		} else if ok {
			synced = append(synced, d)
		}
	}
	for _, a := range cutOff {
		if got := status(t, ctx, a).Trust.Index; got != before[a.Name] {
			t.Fatalf("%s's trust state moved while cut off from the roots (%d -> %d)", a.Name, before[a.Name], got)
		}
	}
	t.Logf("revocation of %s: seen by the half that reaches the roots after p50 %s / max %s, by the cut-off half (gossip bulletin) after p50 %s / max %s",
		victim.Name, pct(synced, 50), pct(synced, 100), pct(bulletin, 50), pct(bulletin, 100))

	// The revocation rotates the gossip key by itself (default step 2 s):
	// installed, used, the old key removed; the agents that reach the
	// roots hold the new keyring.
	for {
		kr, err := cl.GossipKeyring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(kr.Keys) == 1 && kr.Keys[0].ID != old {
			t.Logf("revocation to the old gossip key's removal: %s", time.Since(acked).Round(time.Millisecond))
			for _, a := range mesh {
				if a == dead || a == victim || slices.Contains(cutOff, a) {
					continue
				}
				deadline := time.Now().Add(30 * time.Second)
				for {
					res, err := a.Members(ctx)
					if err == nil && res.KeyringIndex >= kr.Index {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s holds keyring %d, not %d", a.Name, res.KeyringIndex, kr.Index)
					}
					time.Sleep(20 * time.Millisecond) // polling a process
				}
			}
			return
		}
		if time.Since(acked) > time.Minute {
			t.Fatalf("the gossip key rotation did not finish: %+v", kr)
		}
		time.Sleep(50 * time.Millisecond) // the roots have no event for it
	}
}

// seenAt polls every agent at once until each shows member in state, and
// returns how long after since each first did (a minute at most).
func seenAt(t *testing.T, ctx context.Context, agents []*harness.Agent, member string, since time.Time, state gossip.MemberState) map[string]time.Duration {
	t.Helper()
	type result struct {
		name string
		d    time.Duration
	}
	results := make(chan result, len(agents))
	for _, a := range agents {
		go func() {
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				res, err := a.Members(ctx)
				for _, m := range res.Members {
					if err == nil && m.Node == member && m.State == state {
						results <- result{a.Name, time.Since(since)}
						return
					}
				}
				time.Sleep(10 * time.Millisecond) // polling a process
			}
			results <- result{a.Name, 0}
		}()
	}
	out := map[string]time.Duration{}
	for range agents {
		r := <-results
		if r.d == 0 {
			t.Fatalf("%s never showed %s %s", r.name, member, state)
		}
		out[r.name] = r.d
	}
	return out
}

// pct is the p-th percentile of ds, rounded to the millisecond.
func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return fmt.Sprint(s[i].Round(time.Millisecond))
}

// status asks an agent for its status.
func status(t *testing.T, ctx context.Context, a *harness.Agent) agent.StatusResponse {
	t.Helper()
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	st, err := lc.Status(ctx)
	if err != nil {
		t.Fatalf("%s status: %v", a.Name, err)
	}
	return st
}
