package attack

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/test/harness"
)

// TestOutsidersCannotStartElections: a follower starts an election at once
// when a connection from its leader closes and the leader's Raft port then
// refuses a new one. Connections to a follower's Raft port that close are
// therefore a lever: an attacker with network access or a node's key opens
// and closes them by the hundred, with the node's certificate, with none,
// and without TLS at all. None passes the root handshake, so none counts
// as a connection from the leader: no probe, no election, the same leader
// in the same term, taking writes.
func TestOutsidersCannotStartElections(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 3*time.Minute)
	leader := c.Leader(time.Minute)
	before, err := c.StatusOf(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	x := join(t, c, "mallory", "NODE")
	pem, err := os.ReadFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no AS roots in the bundle")
	}
	const each = 100
	for _, r := range c.Roots {
		if r == leader {
			continue
		}
		for i := range each {
			// With the node's certificate: the server refuses it after the
			// handshake's client flight, so the refusal arrives on the
			// first read.
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", RootCAs: roots,
				Certificates: []tls.Certificate{x.tls}}
			if i%2 == 1 {
				cfg.Certificates = nil // with no certificate at all
			}
			conn, err := tls.Dial("tcp", r.RaftAddr, cfg)
			if err == nil {
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatalf("%s's Raft port took a connection with a node certificate (or none)", r.Name)
			}
			// Without TLS: bytes that are no handshake, then gone.
			raw, err := net.Dial("tcp", r.RaftAddr)
			if err != nil {
				t.Fatal(err)
			}
			raw.Write([]byte("\x01\x00\x00\x00\x00garbage"))
			raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			raw.Read(make([]byte, 1)) // the server's alert or close
			raw.Close()
		}
	}
	// Each refused connection was refused before the server read a Raft
	// byte from it, which is before anything could report it closed. A
	// probe that found the leader alive may come from the leader's own
	// connection churn (a timed-out RPC closes its connection) and is
	// harmless; none may find it gone or start an election.
	for _, r := range c.Roots {
		for _, res := range []string{"alive", "unknown", "gone", "heard", "election"} {
			series := `keymesh_raft_leader_probes_total{result="` + res + `"}`
			n := rootMetric(t, c, r, series)
			switch {
			case n != 0 && (res == "alive" || res == "unknown"):
				t.Logf("%s: %s = %d (the leader's own connections)", r.Name, series, n)
			case n != 0:
				t.Errorf("%s: %s = %d after outsiders' connections", r.Name, series, n)
			}
		}
	}
	if _, err := c.Client(leader).Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "outsiders-" + strconv.Itoa(each)}); err != nil {
		t.Fatalf("the leader no longer takes writes: %v", err)
	}
	after, err := c.StatusOf(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != "Leader" || after.Term != before.Term {
		t.Errorf("%s after the attack: %s in term %d, was Leader in term %d", leader.Name, after.State, after.Term, before.Term)
	}
}

// rootMetric reads one series of a root server's metrics; the series must
// be there.
func rootMetric(t *testing.T, c *harness.Cluster, r *harness.Root, series string) int {
	t.Helper()
	b, err := c.Client(r).Metrics(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("%s metrics: %v", r.Name, err)
	}
	n, ok := harness.Series(b, series)
	if !ok {
		t.Fatalf("%s: no series %s in the metrics", r.Name, series)
	}
	return n
}

// TestForgedLastIndexOnAForwardedWrite: a follower that forwards a write
// sends its last Raft log index with it (the Keymesh-Last-Index header),
// and the leader names that entry in
// the commit notice it sends back (cluster/commitnotice.go). The notice
// goes to the root the client certificate names, never to a root the
// request names, so a lying root can only mislead its own Raft, which
// checks the notice as it checks any AppendEntries. Here a root sends
// writes with indexes that are not in the log, far ahead of it, an old
// one and ones that are no number: each is committed once, the roots
// converge on one state, the leader and its term stay. A node's
// certificate may not forward at all.
func TestForgedLastIndexOnAForwardedWrite(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 3*time.Minute)
	leader := c.Leader(time.Minute)
	before, err := c.StatusOf(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	var liar *harness.Root
	for _, r := range c.Roots {
		if r != leader {
			liar = r
		}
	}
	x := join(t, c, "mallory", "NODE")
	apply := func(cert tls.Certificate, id string, last string) (int, uint64) {
		cmd, err := fsm.Encode(fsm.MsgRevoke, time.Now(), fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: id,
			Reason: "keyCompromise", PruneAfter: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"command": cmd})
		hdr := http.Header{"Keymesh-Last-Index": {last}}
		status, ans := internalPost(t, leader, cert, c.CAFile(), "/v1/internal/apply", body, hdr)
		var out struct {
			Index uint64 `json:"index"`
		}
		_ = json.Unmarshal(ans, &out)
		return status, out.Index
	}
	if status, _ := apply(x.tls, "forged-by-a-node", "1"); status != http.StatusForbidden {
		t.Fatalf("a node's certificate forwarded a write: %d", status)
	}
	cert := rootTLS(t, liar.Dir)
	seen := map[uint64]bool{}
	forged := []string{"4611686018427387904", strconv.FormatUint(before.LastLogIndex+1_000_000, 10), "1", "0",
		"18446744073709551615", "18446744073709551616", "-1", "twelve", ""}
	for i, last := range forged {
		status, idx := apply(cert, "forged-last-"+strconv.Itoa(i), last)
		if status != http.StatusOK || idx == 0 || seen[idx] {
			t.Fatalf("write with last index %q: status %d at index %d", last, status, idx)
		}
		seen[idx] = true
	}
	converged(t, c)
	after, err := c.StatusOf(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leader(time.Minute) != leader || after.Term != before.Term {
		t.Fatalf("the leader changed: %s term %d, then term %d", leader.Name, before.Term, after.Term)
	}
	for i := range forged {
		if _, found, err := c.Client(liar).Revocation(ctx, "token", "forged-last-"+strconv.Itoa(i), false); err != nil || !found {
			t.Fatalf("write %d is not on the root that sent it once the roots converged: %v", i, err)
		}
	}
}
