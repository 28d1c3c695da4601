package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/fsm"
)

const network = "agent.example"

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// env is one root server and an admin client.
type env struct {
	t       *testing.T
	network string
	srv     *cluster.Server
	hash    string
	admin   *client.Client
	ctx     context.Context
	clock   *fakeClock
}

func newEnv(t *testing.T, limits cluster.Limits) *env {
	t.Helper()
	return newEnvOf(t, network, limits)
}

// newEnvOf is an env of another network.
func newEnvOf(t *testing.T, network string, limits cluster.Limits) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dir := filepath.Join(t.TempDir(), "r1")
	clock := &fakeClock{now: time.Now()}
	srv, res, err := cluster.Bootstrap(cluster.BootstrapConfig{Network: network, Name: "r1", DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Options: cluster.Options{Limits: limits, Clock: clock.Now, Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{t}})}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	admin, err := client.New(client.Config{Server: srv.APIAddr(), CAFile: cluster.RootsPath(dir), Credential: cluster.CredentialPath(dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return &env{t: t, network: network, srv: srv, hash: res.CAHash, admin: admin, ctx: ctx, clock: clock}
}

// fakeClock is the root server's clock in these tests; a test moves it
// (a token's expiry) instead of waiting.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (e *env) token(req api.CreateJoinTokenRequest) string {
	e.t.Helper()
	req.Kind = "node"
	tok, err := e.admin.CreateJoinToken(e.ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.Secret
}

func (e *env) join(id, token string) (string, agent.Result, error) {
	return e.joinAt(filepath.Join(e.t.TempDir(), id), id, token)
}

// joinAt registers node id into dir.
func (e *env) joinAt(dir, id, token string) (string, agent.Result, error) {
	res, err := agent.Join(e.ctx, agent.JoinConfig{Server: e.srv.APIAddr(), CAHash: e.hash, Network: e.network,
		NodeID: id, DataDir: dir, Token: token, DNSNames: []string{id + "." + e.network}})
	return dir, res, err
}

func TestJoinWithToken(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, res, err := e.join("n1", e.token(api.CreateJoinTokenRequest{Principal: "NODE"}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != fsm.RegistrationApproved {
		t.Fatalf("status %s", res.Status)
	}
	info, err := os.Stat(agent.KeyPath(dir))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode: %v %v", info.Mode(), err)
	}
	certs, err := ca.ReadCertsFile(agent.CertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	id, err := ca.IdentityOf(leaf)
	if err != nil || id.String() != "spiffe://agent.example/node/n1" {
		t.Fatalf("identity %v %v", id, err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "n1.agent.example" {
		t.Fatalf("DNS SANs %v", leaf.DNSNames)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 24*time.Hour || d > 24*time.Hour+2*time.Minute {
		t.Fatalf("validity %s, want 24h", d)
	}
	// The node is active in the replicated state, on this certificate.
	n, ok := e.srv.Store().Node("n1")
	if !ok || n.Status != fsm.NodeActive || n.CertSerial != fsm.FormatSerial(leaf.SerialNumber) {
		t.Fatalf("node record %+v", n)
	}
}

// TestPendingApprovalSurvivesRestart: without a token the request waits;
// the node "stops" (nothing of the first call is kept but its data dir),
// is approved, and collects its certificate from the data dir alone.
func TestPendingApprovalSurvivesRestart(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, res, err := e.join("n2", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != fsm.RegistrationPending || res.RegistrationID == "" {
		t.Fatalf("registration %+v", res)
	}
	if _, err := agent.Collect(e.ctx, dir, nil); !errors.Is(err, agent.ErrPending) {
		t.Fatalf("collect before approval: %v", err)
	}
	pending, err := e.admin.Registrations(e.ctx, "pending", false)
	if err != nil || len(pending) != 1 || pending[0].NodeID != "n2" {
		t.Fatalf("pending list %+v %v", pending, err)
	}
	if _, err := e.admin.Approve(e.ctx, res.RegistrationID); err != nil {
		t.Fatal(err)
	}
	got, err := agent.Collect(e.ctx, dir, nil)
	if err != nil || got.Status != fsm.RegistrationApproved {
		t.Fatalf("collect after approval: %+v %v", got, err)
	}
	if _, err := agent.Certificate(dir); err != nil {
		t.Fatal(err)
	}
	// Approving twice is a conflict.
	if _, err := e.admin.Approve(e.ctx, res.RegistrationID); !isStatus(err, http.StatusConflict) {
		t.Fatalf("second approval: %v", err)
	}
}

func TestDeniedRegistration(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, res, err := e.join("n3", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Deny(e.ctx, res.RegistrationID, "unknown hardware"); err != nil {
		t.Fatal(err)
	}
	got, err := agent.Collect(e.ctx, dir, nil)
	if !errors.Is(err, agent.ErrDenied) || got.Reason != "unknown hardware" {
		t.Fatalf("collect after deny: %+v %v", got, err)
	}
}

// TestCollectNeedsTheKey: a collection signed with another key is refused.
func TestCollectNeedsTheKey(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, res, err := e.join("n4", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Approve(e.ctx, res.RegistrationID); err != nil {
		t.Fatal(err)
	}
	other, _ := ca.GenerateKey(ca.KeyP384, nil)
	now := time.Now().UTC().Format(time.RFC3339)
	sig, _ := ca.SignPossession(other, nil, "collect", res.RegistrationID, now)
	cl, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: agent.RootsPath(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Collect(e.ctx, res.RegistrationID, api.CollectRequest{Time: now, Signature: sig}); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("collect with another key: %v", err)
	}
	stale := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	key, _ := ca.ReadKeyFile(agent.KeyPath(dir))
	sig, _ = ca.SignPossession(key, nil, "collect", res.RegistrationID, stale)
	if _, err := cl.Collect(e.ctx, res.RegistrationID, api.CollectRequest{Time: stale, Signature: sig}); !isStatus(err, http.StatusBadRequest) {
		t.Fatalf("collect with an hour-old proof: %v", err)
	}
}

func TestRenewal(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("n5", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := ca.ReadCertsFile(agent.CertPath(dir))
	renewed, err := agent.Renew(e.ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.SerialNumber.Cmp(old[0].SerialNumber) == 0 {
		t.Fatal("renewal kept the serial")
	}
	if got := agent.RenewAt(renewed); got.Sub(renewed.NotBefore) != renewed.NotAfter.Sub(renewed.NotBefore)*2/3 {
		t.Fatalf("renew at %s", got)
	}
	n, _ := e.srv.Store().Node("n5")
	if n.CertSerial != fsm.FormatSerial(renewed.SerialNumber) || n.PrevSerial != fsm.FormatSerial(old[0].SerialNumber) {
		t.Fatalf("node record after renewal %+v", n)
	}
	// The old certificate is not revoked: it stays valid until it expires.
	if _, revoked := e.srv.Store().Revoked(fsm.RevocationCert, n.PrevSerial); revoked {
		t.Fatal("renewal revoked the old certificate")
	}
	// A revoked node cannot renew.
	if _, err := e.admin.Revoke(e.ctx, api.RevokeRequest{Kind: "node", ID: "n5", Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	_, err = agent.Renew(e.ctx, dir)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != api.CodeNodeRevoked {
		t.Fatalf("renewal of a revoked node: %v", err)
	}
}

// TestRenewalAnswerLost: a node whose renewal answers are lost keeps its
// certificate and retries with it as often as it must; once it has moved on,
// a certificate older than its previous one no longer renews.
func TestRenewalAnswerLost(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("n7", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	original, err := os.ReadFile(agent.CertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ca.ReadCertsFile(agent.CertPath(dir))
	firstSerial := fsm.FormatSerial(first[0].SerialNumber)
	var last *x509.Certificate
	for i := range 3 {
		renewed, err := agent.Renew(e.ctx, dir)
		if err != nil {
			t.Fatalf("renewal %d with the certificate whose renewals were lost: %v", i+1, err)
		}
		last = renewed
		// The answer never reached the node: it still holds its first certificate.
		if err := os.WriteFile(agent.CertPath(dir), original, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := e.srv.Store().Node("n7")
	if n.CertSerial != fsm.FormatSerial(last.SerialNumber) || n.PrevSerial != firstSerial {
		t.Fatalf("node record after three lost answers %+v, want current %s and previous %s", n, fsm.FormatSerial(last.SerialNumber), firstSerial)
	}
	// This time the answer arrives; the node then renews with the newest twice,
	// and its first certificate is neither current nor previous any more.
	for range 3 {
		if _, err := agent.Renew(e.ctx, dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(agent.CertPath(dir), original, 0o600); err != nil {
		t.Fatal(err)
	}
	before := e.srv.Store().Hash()
	_, err = agent.Renew(e.ctx, dir)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Message, "neither the node's current nor its previous") {
		t.Fatalf("renewal with a certificate two renewals old: %v", err)
	}
	if e.srv.Store().Hash() != before {
		t.Fatal("a refused renewal changed the state")
	}
}

// TestCRL: a revoked serial is in its issuer's CRL at once after the commit.
func TestCRL(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("n6", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := ca.ReadCertsFile(agent.CertPath(dir))
	serial := fsm.FormatSerial(certs[0].SerialNumber)
	rev, err := e.admin.Revoke(e.ctx, api.RevokeRequest{Kind: "cert", ID: serial, Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	// Kept until the certificate would have expired anyway, not longer.
	if !rev.Revocation.PruneAfter.Equal(certs[0].NotAfter) {
		t.Fatalf("prune after %s, the certificate expires %s", rev.Revocation.PruneAfter, certs[0].NotAfter)
	}
	start := time.Now()
	der, err := e.admin.CRL(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(certs[1]); err != nil {
		t.Fatalf("CRL not signed by the issuing intermediate: %v", err)
	}
	if !crl.NextUpdate.After(time.Now()) {
		t.Fatalf("nextUpdate %s", crl.NextUpdate)
	}
	found := false
	for _, ent := range crl.RevokedCertificateEntries {
		found = found || ent.SerialNumber.Cmp(certs[0].SerialNumber) == 0
	}
	if !found {
		t.Fatal("revoked serial missing from the CRL")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("CRL took %s after the commit", d)
	}
}

func isStatus(err error, status int) bool {
	var ae *api.APIError
	return errors.As(err, &ae) && ae.Status == status
}

// csrWith makes a CSR with an arbitrary key, bypassing ca.NewCSR's checks.
func csrWith(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestRegistrationRefusals: each bad registration gets a 4xx with a reason
// and changes nothing.
func TestRegistrationRefusals(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	good, _ := ca.GenerateKey(ca.KeyP384, nil)
	goodCSR, _ := ca.NewCSR(good, ca.Identity{Network: network, Kind: ca.KindNode, Name: "x"}, nil, nil)
	broken := append([]byte(nil), goodCSR...)
	broken[len(broken)-5] ^= 0xff
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)

	bound := e.token(api.CreateJoinTokenRequest{NodeID: "only-this"})
	used := e.token(api.CreateJoinTokenRequest{})
	if _, _, err := e.join("taker", used); err != nil {
		t.Fatal(err)
	}
	revoked, err := e.admin.CreateJoinToken(e.ctx, api.CreateJoinTokenRequest{Kind: "node"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RevokeJoinToken(e.ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expiring, err := e.admin.CreateJoinToken(e.ctx, api.CreateJoinTokenRequest{Kind: "node", TTL: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	rootTok, err := e.admin.CreateJoinToken(e.ctx, api.CreateJoinTokenRequest{Kind: "root"})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Second) // past the expiring token's end, on the server's clock

	cases := []struct {
		name   string
		req    api.RegisterRequest
		status int
		want   string
	}{
		{"broken CSR signature", api.RegisterRequest{CSR: broken, NodeID: "a"}, 400, "signature"},
		{"RSA-1024 key", api.RegisterRequest{CSR: csrWith(t, rsa1024), NodeID: "a"}, 400, "RSA"},
		{"P-224 key", api.RegisterRequest{CSR: csrWith(t, p224), NodeID: "a"}, 400, "P-224"},
		{"garbage CSR", api.RegisterRequest{CSR: []byte("garbage"), NodeID: "a"}, 400, "certificate request"},
		{"no CSR", api.RegisterRequest{NodeID: "a"}, 400, "certificate request"},
		{"bad node id", api.RegisterRequest{CSR: goodCSR, NodeID: "a b"}, 400, "node_id"},
		{"other network", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Network: "other.example"}, 400, "network"},
		{"unknown principal", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Principal: "ROOT"}, 400, "principal"},
		{"node id outside the token's constraint", api.RegisterRequest{CSR: goodCSR, NodeID: "other", Token: bound}, 403, "bound"},
		{"used token", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Token: used}, 403, "used"},
		{"revoked token", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Token: revoked.Secret}, 403, "revoked"},
		{"expired token", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Token: expiring.Secret}, 403, "expired"},
		{"root token for a node", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Token: rootTok.Secret}, 403, "root"},
		{"unknown token", api.RegisterRequest{CSR: goodCSR, NodeID: "a", Token: "kmjt.nope"}, 403, "not known"},
		{"node id already active", api.RegisterRequest{CSR: goodCSR, NodeID: "taker"}, 409, "already active"},
	}
	cl, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: cluster.RootsPath(e.srv.DataDir())})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.srv.Store().Hash()
			_, err := cl.Register(e.ctx, c.req)
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Status != c.status || !strings.Contains(ae.Message, c.want) {
				t.Fatalf("got %v, want %d mentioning %q", err, c.status, c.want)
			}
			if after := e.srv.Store().Hash(); after != before {
				t.Fatal("a refused registration changed the state")
			}
		})
	}
}

// TestRateLimits: the per-source registration limit and the signing limit
// answer 429 with Retry-After once exceeded.
func TestRateLimits(t *testing.T) {
	t.Run("registrations per source", func(t *testing.T) {
		e := newEnv(t, cluster.Limits{RegistrationRate: 1, RegistrationBurst: 3})
		cl, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: cluster.RootsPath(e.srv.DataDir())})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var limited error
		for i := 0; i < 10 && limited == nil; i++ {
			_, err := cl.Register(e.ctx, api.RegisterRequest{NodeID: "a"}) // refused for its CSR, but counted
			if isStatus(err, http.StatusTooManyRequests) {
				limited = err
			}
		}
		var ae *api.APIError
		if !errors.As(limited, &ae) || ae.RetryAfter < time.Second {
			t.Fatalf("10 registrations within a burst of 3: %v", limited)
		}
	})
	t.Run("signing", func(t *testing.T) {
		e := newEnv(t, cluster.Limits{SigningRate: 0.01, SigningBurst: 2})
		tok := e.token(api.CreateJoinTokenRequest{Uses: 10})
		var limited error
		for i := 0; i < 5 && limited == nil; i++ {
			_, _, err := e.join("s"+string(rune('a'+i)), tok)
			if isStatus(err, http.StatusTooManyRequests) {
				limited = err
			}
		}
		var ae *api.APIError
		if !errors.As(limited, &ae) || ae.RetryAfter < time.Second || !strings.Contains(ae.Message, "signing") {
			t.Fatalf("signing beyond a burst of 2: %v", limited)
		}
	})
}
