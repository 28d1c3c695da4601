package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/test/harness"
)

// TestPendingRegistrationsBounded: registrations without a token, which
// anyone may send, are bounded cluster-wide by the replicated state: one
// pending per node id (a second is refused, never replaces the first), a
// few per source address and a total, however the attacker spreads them
// over the root servers.
func TestPendingRegistrationsBounded(t *testing.T) {
	c := harness.Start(t, bin, harness.Config{Servers: 3, Extra: []string{"--max-pending-registrations", "4",
		"--max-pending-per-source", "2", "--registration-rate", "100", "--registration-burst", "100"}})
	ctx := ctxT(t, time.Minute)
	reg := func(src string, r *harness.Root, id string) (int, string) {
		t.Helper()
		return postFrom(t, ctx, c, src, r, "/v1/registrations", map[string]any{"node_id": id, "csr": csrFor(t, c.Network, id)})
	}
	for i, r := range c.Roots[:2] {
		if status, code := reg("127.0.0.1", r, fmt.Sprintf("a-%d", i)); status != http.StatusAccepted {
			t.Fatalf("pending registration %d from 127.0.0.1: %d %s", i, status, code)
		}
	}
	if status, code := reg("127.0.0.1", c.Roots[2], "a-2"); status != http.StatusTooManyRequests || code != "limit" {
		t.Fatalf("a third pending registration from one source, through another server: %d %s", status, code)
	}
	if status, code := reg("127.0.0.2", c.Roots[2], "a-0"); status != http.StatusConflict {
		t.Fatalf("a second pending registration for one node id: %d %s", status, code)
	}
	for i, r := range c.Roots[1:] {
		if status, code := reg("127.0.0.2", r, fmt.Sprintf("b-%d", i)); status != http.StatusAccepted {
			t.Fatalf("pending registration %d from 127.0.0.2: %d %s", i, status, code)
		}
	}
	if status, code := reg("127.0.0.3", c.Roots[0], "c-0"); status != http.StatusTooManyRequests || code != "limit" {
		t.Fatalf("a fifth pending registration in all: %d %s", status, code)
	}
	pending, err := c.Client(c.Roots[0]).Registrations(ctx, "pending", true)
	if err != nil || len(pending) != 4 {
		t.Fatalf("pending registrations: %d, %v", len(pending), err)
	}
}

// TestRegistrationAndJoinRates: registrations and root joins from one
// source are rate limited at each server's share of the limit, so that
// spreading them over every root server gains nothing.
func TestRegistrationAndJoinRates(t *testing.T) {
	c := harness.Start(t, bin, harness.Config{Servers: 3, Extra: []string{"--registration-rate", "0.5", "--registration-burst", "3"}})
	ctx := ctxT(t, time.Minute)
	start := time.Now()
	allowed, limited := 0, 0
	for i := 0; i < 30; i++ {
		r := c.Roots[i%3]
		status, _ := postFrom(t, ctx, c, "127.0.0.5", r, "/v1/registrations", map[string]any{"node_id": fmt.Sprintf("flood-%d", i), "csr": "MIIB"})
		switch status {
		case http.StatusTooManyRequests:
			limited++
		default:
			allowed++
		}
	}
	// The burst of 3 in all, plus what 0.5/s refills meanwhile.
	if most := 3 + int(time.Since(start).Seconds()*0.5) + 1; allowed > most {
		t.Fatalf("30 registrations spread over 3 servers: %d got through the limiter, at most %d may", allowed, most)
	}
	joins := 0
	for i := 0; i < 10; i++ {
		status, _ := postFrom(t, ctx, c, "127.0.0.6", c.Roots[0], "/v1/cluster/join", map[string]any{"token": "kmjt.guess", "name": "r9"})
		if status == http.StatusTooManyRequests {
			joins++
		}
	}
	if joins < 8 {
		t.Fatalf("10 root joins at one server: %d limited, want all but its share of the burst", joins)
	}
}

// postFrom POSTs body as JSON to r from the loopback source address src
// and returns the status and error code.
func postFrom(t *testing.T, ctx context.Context, c *harness.Cluster, src string, r *harness.Root, path string, body any) (int, string) {
	t.Helper()
	roots, err := ca.ReadCertsFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, VerifyConnection: ca.RootServerVerifier}}}
	defer hc.CloseIdleConnections()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+r.APIAddr+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s from %s: %v", path, src, err)
	}
	defer resp.Body.Close()
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code
}

// TestBlockingQueriesCapped: blocking trust queries are capped per caller
// (default 4) and per server (--max-blocking-queries): a caller that
// opens more, or callers that together open more, get 429 with
// Retry-After at once and hold nothing; the queries within the caps block
// until the state moves. Followers turned away come back after the
// Retry-After and still refuse a revocation like the others.
func TestBlockingQueriesCapped(t *testing.T) {
	c := harness.Start(t, bin, harness.Config{Servers: 3, Extra: []string{"--max-blocking-queries", "6",
		"--registration-rate", "1000", "--registration-burst", "1000"}})
	ctx := ctxT(t, 2*time.Minute)
	nodes := c.RegisterNodes(ctx, "capped", 24)
	admin := c.Client(c.Roots[0])
	index := mustIndex(t, admin, ctx)

	// flood opens per queries of each node at r at once. It returns the
	// 429s once they all arrived, then moves the state and checks that
	// the others were blocking and answer the change.
	flood := func(r *harness.Root, ids []harness.NodeIdentity, per, wantRefused int) {
		t.Helper()
		type result struct {
			err   error
			index uint64
		}
		res := make(chan result, len(ids)*per)
		for _, n := range ids {
			cert := n.TLS
			cl, err := client.New(client.Config{Server: r.APIAddr, CAFile: c.CAFile(), Certificate: &cert, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			for range per {
				go func() {
					d, err := cl.Trust(ctx, index, 50*time.Second, false)
					res <- result{err, d.Index}
				}()
			}
		}
		for range wantRefused {
			got := <-res
			var ae *api.APIError
			if !errors.As(got.err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != api.CodeTooMany || ae.RetryAfter < time.Second {
				t.Fatalf("a query over the caps: %v (index %d), want 429 %s with Retry-After", got.err, got.index, api.CodeTooMany)
			}
		}
		rev, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "flood-" + r.Name, Reason: "move the state"})
		if err != nil {
			t.Fatal(err)
		}
		for range len(ids)*per - wantRefused {
			got := <-res
			if got.err != nil || got.index < rev.Index {
				t.Fatalf("a query within the caps answered %v at index %d, want the change at %d", got.err, got.index, rev.Index)
			}
		}
		index = rev.Index
	}
	// One node, six queries at r1: four within its cap, two refused.
	flood(c.Roots[0], nodes[:1], 6, 2)
	// Three nodes, four each at r2: six within the server's cap.
	flood(c.Roots[1], nodes[1:4], 4, 6)

	// Twenty followers over three servers holding six each: some are
	// turned away, wait, retry; all refuse a revocation.
	baseline := throttledQueries(t, ctx, c)
	var followers []*agent.Follower
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	base := t.TempDir()
	for i, n := range nodes[4:] {
		f, err := c.Follower(n, filepath.Join(base, n.ID), i, agent.FollowerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		followers = append(followers, f)
		go f.Run(runCtx)
	}
	for _, f := range followers {
		if err := f.WaitFor(ctx, func(v trust.View) bool { return v.Index() >= index }); err != nil {
			t.Fatalf("a follower never caught up: %v (%+v)", err, f.Status())
		}
	}
	// Every server holds its six: the other two followers were turned away.
	for deadline := time.Now().Add(30 * time.Second); metricSum(t, ctx, c, "keymesh_trust_blocking_queries") < 18; {
		if time.Now().After(deadline) {
			t.Fatalf("the servers hold %d blocking queries of twenty followers, want 18", metricSum(t, ctx, c, "keymesh_trust_blocking_queries"))
		}
		time.Sleep(50 * time.Millisecond) // polling real processes
	}
	turnedAway := throttledQueries(t, ctx, c) - baseline
	rev, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "stolen-jti", Reason: "stolen"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		keys := &trust.Keys{View: f.State}
		if err := f.WaitFor(ctx, func(trust.View) bool { return keys.Revoked("token", "stolen-jti") }); err != nil {
			t.Fatalf("a follower does not refuse the token revoked at %d: %v (%+v)", rev.Index, err, f.Status())
		}
	}
	if baseline < 8 {
		t.Fatalf("the floods were answered 429 %d times, want 8", baseline)
	}
	if turnedAway == 0 {
		t.Fatal("twenty followers on servers holding six blocking queries each were never answered 429")
	}
	t.Logf("followers were answered 429 %d times while catching up; all %d refuse the revocation", turnedAway, len(followers))
}

// throttledQueries sums the 429 answers of GET /v1/trust on the roots.
func throttledQueries(t *testing.T, ctx context.Context, c *harness.Cluster) int {
	t.Helper()
	return metricSum(t, ctx, c, `keymesh_api_requests_total{code="429",route="GET /v1/trust"}`)
}

// metricSum sums a metric series (name with its labels, as exposed) over
// the roots.
func metricSum(t *testing.T, ctx context.Context, c *harness.Cluster, series string) int {
	t.Helper()
	total := 0
	for _, r := range c.Roots {
		b, err := c.Client(r).Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				total += int(n)
			}
		}
	}
	return total
}
