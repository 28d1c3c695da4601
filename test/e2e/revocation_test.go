package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/harness"
)

// Revocation propagation (DESIGN.md invariant 4): root servers refuse a
// revoked token at once after the commit; node agents within 1 s at p99.
const (
	revocationAgents = 20
	revocationP99    = time.Second
	// revocationPoll is how often each agent checks the victim's token.
	revocationPoll = 2 * time.Millisecond
	revocationAud  = "revocation.e2e"
)

// loadAvg is the host's load average, for the log ("?" where unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// TestRevocationPropagation runs three root servers as processes and 20
// node agents, each with its own data directory, registered with one node
// token of 20 uses, spread over the three roots (so they follow different
// replicas). The agents run in this test's process (agent.Run, as
// `keymesh node run` does), which keeps 20 of them affordable on a small
// machine; the roots are real processes. Each agent checks a victim
// node's token through its in-process verifier every 2 ms. The test
// revokes the token, then separately the other victim node, through a root
// server and measures, per agent, the time from the revoke call's
// acknowledgement to the agent's first refusal. The root that acknowledged
// must refuse at once (POST /v1/verify on its live replica); the others'
// delays are logged.
func TestRevocationPropagation(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := c.Client(c.Roots[0])
	tok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Uses: revocationAgents, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	victimTok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Uses: 2, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	join := func(id, token string, r *harness.Root) string {
		dir := filepath.Join(base, id)
		if _, err := agent.Join(ctx, agent.JoinConfig{Server: r.APIAddr, CAHash: c.CAHash, Network: c.Network,
			NodeID: id, DataDir: dir, Token: token}); err != nil {
			t.Fatalf("join %s: %v", id, err)
		}
		return dir
	}

	// The victims mint; they need no running agent for that.
	victims := map[string]string{} // kind -> token
	for _, kind := range []string{"token", "node"} {
		v, err := agent.New(agent.RunConfig{DataDir: join("victim-"+kind, victimTok.Secret, c.Roots[0])})
		if err != nil {
			t.Fatal(err)
		}
		token, _, _, err := v.Mint(identity.MintRequest{Audience: []string{revocationAud}, TTL: 30 * time.Minute}, false)
		if err != nil {
			t.Fatal(err)
		}
		victims[kind] = token
	}

	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: logWriter{t}})
	agents := make([]*agent.Agent, revocationAgents)
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(context.Background())
	defer func() { stop(); wg.Wait() }()
	for i := range agents {
		r := c.Roots[i%len(c.Roots)]
		dir := join(fmt.Sprintf("n%02d", i), tok.Secret, r)
		a, err := agent.New(agent.RunConfig{DataDir: dir, Logger: logger.Named(fmt.Sprintf("n%02d", i))})
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(runCtx); err != nil {
				t.Errorf("agent n%02d: %v", i, err)
			}
		}()
		<-a.Ready()
	}
	verify := func(a *agent.Agent, token string) error {
		_, err := a.Verifier().Verify(ctx, identity.VerifyRequest{Token: token, Audience: []string{revocationAud}})
		return err
	}
	// Every agent accepts both victims' tokens before the clock starts.
	deadline := time.Now().Add(30 * time.Second)
	for i, a := range agents {
		for kind, token := range victims {
			for {
				err := verify(a, token)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("agent n%02d refuses victim %s before any revocation: %v", i, kind, err)
				}
				time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
			}
		}
	}

	// Any root verifies against its live replica.
	rootClients := map[string]*client.Client{}
	for _, r := range c.Roots {
		rootClients[r.Name] = c.Client(r)
	}

	victimJTI, err := identity.ParseUnverified(victims["token"], 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind, id, reason string
		via              *harness.Root
	}{
		{"token", victimJTI.Claims.ID, "revoked_token", c.Roots[1]},
		{"node", "victim-node", "revoked_node", c.Roots[2]},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			token := victims[tc.kind]
			refused := make([]time.Time, len(agents))
			var pollers sync.WaitGroup
			start := make(chan struct{})
			pollCtx, endPoll := context.WithTimeout(ctx, 20*time.Second)
			defer endPoll()
			for i, a := range agents {
				pollers.Add(1)
				go func() {
					defer pollers.Done()
					select {
					case <-start:
					case <-pollCtx.Done():
						return
					}
					for pollCtx.Err() == nil {
						err := verify(a, token)
						if err != nil {
							refused[i] = time.Now()
							if !errors.Is(err, identity.ErrRevoked) {
								t.Errorf("agent n%02d refused with %v, want a revocation", i, err)
							}
							return
						}
						time.Sleep(revocationPoll) // the polling rate, not synchronisation
					}
				}()
			}
			// Every root accepts the token before (and keeps a warm
			// connection, so that no TLS handshake is measured below).
			for name, rc := range rootClients {
				if v, err := rc.Verify(ctx, token, revocationAud); err != nil || !v.Valid {
					t.Fatalf("root %s before the revocation: %+v, %v", name, v, err)
				}
			}
			close(start)
			cl := rootClients[tc.via.Name]
			sent := time.Now()
			resp, err := cl.Revoke(ctx, api.RevokeRequest{Kind: tc.kind, ID: tc.id, Reason: "e2e"})
			acked := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			// The root that acknowledged refuses at once.
			if v, err := cl.Verify(ctx, token, revocationAud); err != nil || v.Valid || v.Reason != tc.reason {
				t.Fatalf("root %s right after the acknowledgement: %+v, %v", tc.via.Name, v, err)
			}
			for _, r := range c.Roots {
				if r == tc.via {
					continue
				}
				for {
					v, err := rootClients[r.Name].Verify(ctx, token, revocationAud)
					if err == nil && !v.Valid && v.Reason == tc.reason {
						t.Logf("root %s refuses %s after the acknowledgement", r.Name, time.Since(acked).Round(time.Microsecond))
						break
					}
					if time.Since(acked) > revocationP99 {
						t.Fatalf("root %s still answers %+v, %v", r.Name, v, err)
					}
				}
			}
			pollers.Wait()

			var lat []time.Duration
			early := 0
			for i, at := range refused {
				if at.IsZero() {
					t.Fatalf("agent n%02d never refused the revoked %s", i, tc.kind)
				}
				d := at.Sub(acked)
				if d < 0 {
					early++ // the agent had it before the answer reached us
					d = 0
				}
				lat = append(lat, d)
			}
			slices.Sort(lat)
			p50, p99, worst := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
			t.Logf("revoke %s through %s: commit acknowledged after %s (index %d); %d agents refused after the acknowledgement: p50 %s, p99 %s, max %s (%d before it); host load %s",
				tc.kind, tc.via.Name, acked.Sub(sent).Round(time.Microsecond), resp.Index, len(lat),
				p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond), early, loadAvg())
			if p99 > revocationP99 {
				t.Fatalf("p99 %s over %s", p99, revocationP99)
			}
			// Their local APIs say so too.
			for i, a := range agents {
				lc := agent.NewLocalClient(a.SocketPath())
				v, err := lc.Verify(ctx, agent.VerifyRequest{Token: token, Audience: agent.Audience{revocationAud}})
				lc.Close()
				if err != nil || v.Valid || v.Reason != tc.reason {
					t.Fatalf("agent n%02d's local API: %+v, %v", i, v, err)
				}
			}
		})
	}
}
