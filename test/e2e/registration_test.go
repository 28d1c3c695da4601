package e2e

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/test/harness"
)

// TestTokenUsesHoldAcrossFailover fires 20 concurrent registrations at a
// 5-use node token, spread over the three roots, and kills the leader with
// kill -9 in the middle. Exactly five certificates exist afterwards: the
// use count is a Raft command, so a failover neither loses nor repeats a
// use, and no client holds a certificate the cluster did not commit.
func TestTokenUsesHoldAcrossFailover(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := c.Leader(10 * time.Second)
	tok, err := c.Client(leader).CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Uses: 5, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	// Keys and requests first, so the race is only the registrations'.
	const n = 20
	csrs := make([][]byte, n)
	for i := range csrs {
		k, _ := ca.GenerateKey(ca.KeyP256, nil)
		csrs[i], _ = ca.NewCSR(k, ca.Identity{Network: c.Network, Kind: ca.KindNode, Name: fmt.Sprintf("race-%d", i)}, nil, nil)
	}
	type outcome struct {
		node  string
		chain [][]byte
		err   error
	}
	out := make(chan outcome, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	var clients []*client.Client
	for _, r := range c.Roots {
		clients = append(clients, c.Client(r))
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Spread the starts over about half a second so that the kill
			// falls among them, not after them.
			time.Sleep(time.Duration(i) * 25 * time.Millisecond) // load shaping, not synchronisation
			node := fmt.Sprintf("race-%d", i)
			resp, err := clients[i%len(clients)].Register(ctx, api.RegisterRequest{CSR: csrs[i], NodeID: node, Token: tok.Secret})
			out <- outcome{node: node, chain: resp.Chain, err: err}
		}()
	}
	close(start)
	// Kill the leader once the first registrations are through.
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the outcome count
	}
	c.Kill(leader)
	t.Logf("killed leader %s after %d outcomes", leader.Name, len(out))
	wg.Wait()
	close(out)

	got := map[string][]byte{}
	var failures []error
	for o := range out {
		if o.err != nil {
			failures = append(failures, o.err)
			continue
		}
		got[o.node] = o.chain[0]
	}
	t.Logf("%d registrations got a certificate, %d failed", len(got), len(failures))
	if len(got) == 0 {
		t.Fatal("no registration succeeded at all")
	}

	c.WaitConverged(30 * time.Second)
	survivor := c.Running()[0]
	regs, err := c.Client(survivor).Registrations(ctx, fsm.RegistrationApproved, true)
	if err != nil {
		t.Fatal(err)
	}
	committed := map[string]string{}
	for _, r := range regs {
		committed[r.NodeID] = r.Serial
	}
	if len(committed) != 5 {
		t.Fatalf("%d certificates committed for a 5-use token: %v", len(committed), committed)
	}
	if len(got) > 5 {
		t.Fatalf("%d clients hold a certificate", len(got))
	}
	for node, der := range got {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if committed[node] != fsm.FormatSerial(cert.SerialNumber) {
			t.Errorf("%s holds serial %s, the cluster committed %q", node, fsm.FormatSerial(cert.SerialNumber), committed[node])
		}
	}
	tokens, err := c.Client(survivor).JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tokens {
		if tk.ID == tok.ID && tk.Used != 5 {
			t.Errorf("token used %d times, want 5", tk.Used)
		}
	}
	for _, err := range failures {
		var ae *api.APIError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Code != "token_exhausted" {
			t.Errorf("unexpected refusal: %v", err)
		}
	}
}
