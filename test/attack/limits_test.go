package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
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
