package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

// nodeClient is an API client that presents the node's certificate.
func (e *env) nodeClient(dir string) *client.Client {
	e.t.Helper()
	cert, err := agent.Certificate(dir)
	if err != nil {
		e.t.Fatal(err)
	}
	cl, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: agent.RootsPath(dir), Certificate: &cert})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

func (e *env) adminToken() string {
	e.t.Helper()
	b, err := os.ReadFile(cluster.AdminTokenPath(e.srv.DataDir()))
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (e *env) tokenClient(token string) *client.Client {
	e.t.Helper()
	cl, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: cluster.RootsPath(e.srv.DataDir()), Token: token})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

// TestCedarDecidesAdminCalls: what a caller may do follows its principal
// under the default policies — a NODE renews and reads trust but makes no
// tokens; a NODE_CUSTODIAN makes tokens but writes no policy; a USER reads
// trust only; the bootstrap's system admin token may do everything.
func TestCedarDecidesAdminCalls(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	nodeDir, _, err := e.join("plain", e.token(api.CreateJoinTokenRequest{Principal: "NODE"}))
	if err != nil {
		t.Fatal(err)
	}
	custDir, _, err := e.join("custodian", e.token(api.CreateJoinTokenRequest{Principal: "NODE_CUSTODIAN"}))
	if err != nil {
		t.Fatal(err)
	}
	userDir, _, err := e.join("user", e.token(api.CreateJoinTokenRequest{Principal: "USER"}))
	if err != nil {
		t.Fatal(err)
	}
	callers := map[string]*client.Client{
		"NODE": e.nodeClient(nodeDir), "NODE_CUSTODIAN": e.nodeClient(custDir), "USER": e.nodeClient(userDir),
		"ADMIN token": e.tokenClient(e.adminToken()),
	}
	calls := map[string]func(*client.Client) error{
		"token.create": func(c *client.Client) error {
			_, err := c.CreateJoinToken(e.ctx, api.CreateJoinTokenRequest{Kind: "node"})
			return err
		},
		"trust.read":        func(c *client.Client) error { _, err := c.Trust(e.ctx, 0, 0, false); return err },
		"registration.list": func(c *client.Client) error { _, err := c.Registrations(e.ctx, "", false); return err },
		"revocation.create": func(c *client.Client) error {
			_, err := c.Revoke(e.ctx, api.RevokeRequest{Kind: "token", ID: "t-" + time.Now().Format("150405.000000")})
			return err
		},
		"cluster.read": func(c *client.Client) error { _, err := c.Status(e.ctx); return err },
		"policy.read":  func(c *client.Client) error { _, err := c.Policy(e.ctx); return err },
	}
	allowed := map[string][]string{
		"NODE":           {"trust.read"},
		"NODE_CUSTODIAN": {"token.create", "trust.read", "registration.list", "revocation.create", "cluster.read"},
		"USER":           {"trust.read"},
		"ADMIN token":    {"token.create", "trust.read", "registration.list", "revocation.create", "cluster.read", "policy.read"},
	}
	for who, cl := range callers {
		for action, call := range calls {
			want := false
			for _, a := range allowed[who] {
				want = want || a == action
			}
			err := call(cl)
			switch {
			case want && err != nil:
				t.Errorf("%s %s: refused: %v", who, action, err)
			case !want && !isStatus(err, http.StatusForbidden):
				t.Errorf("%s %s: got %v, want 403", who, action, err)
			case !want && !strings.Contains(err.Error(), "may not "+action):
				t.Errorf("%s %s: refusal does not name the action: %v", who, action, err)
			}
		}
	}
	// No credential at all: 401.
	anon, err := client.New(client.Config{Server: e.srv.APIAddr(), CAFile: cluster.RootsPath(e.srv.DataDir())})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Status(e.ctx); !isStatus(err, http.StatusUnauthorized) {
		t.Errorf("anonymous status: %v", err)
	}
	// A forged token: 403, with the verifier's reason.
	forged := e.adminToken()
	forged = forged[:len(forged)-4] + "AAAA"
	if _, err := e.tokenClient(forged).Status(e.ctx); !isStatus(err, http.StatusForbidden) || !strings.Contains(err.Error(), "bearer token is refused") {
		t.Errorf("forged token: %v", err)
	}
}

// TestPolicyReplicatedAndValidated: a bad policy set is refused and
// changes nothing; a good one takes effect at once; a stale version is a
// conflict.
func TestPolicyReplicatedAndValidated(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	nodeDir, _, err := e.join("n", e.token(api.CreateJoinTokenRequest{Principal: "NODE"}))
	if err != nil {
		t.Fatal(err)
	}
	node := e.nodeClient(nodeDir)
	doc, err := e.admin.Policy(e.ctx)
	if err != nil || !doc.Default || doc.Version != 0 {
		t.Fatalf("initial policy %+v %v", doc, err)
	}
	before := e.srv.Store().Hash()
	for _, bad := range []string{"permit (", `permit (principal == Role::"WIZARD", action, resource);`, `permit (principal, action == Action::"fly", resource);`} {
		if _, err := e.admin.SetPolicy(e.ctx, bad, 0); !isStatus(err, http.StatusBadRequest) {
			t.Errorf("bad policy %q: %v", bad, err)
		}
	}
	if e.srv.Store().Hash() != before {
		t.Fatal("a refused policy changed the state")
	}
	// Only admins: nodes lose trust.read.
	text := `@id("admins") permit (principal == Role::"ADMIN", action, resource);`
	set, err := e.admin.SetPolicy(e.ctx, text, 0)
	if err != nil || set.Version != 1 {
		t.Fatalf("set policy: %+v %v", set, err)
	}
	if _, err := node.Trust(e.ctx, 0, 0, false); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("node reads trust under an admins-only policy: %v", err)
	}
	// A policy set that locks ADMIN out of policy.write is refused unless forced.
	lockout := `@id("nodes-read") permit (principal == Role::"NODE", action == Action::"trust.read", resource);`
	if _, err := e.admin.SetPolicy(e.ctx, lockout, 1); !isStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "locks every operator out") {
		t.Fatalf("lock-out policy: %v", err)
	}
	if _, err := e.admin.SetPolicy(e.ctx, policy.DefaultText(), 0); !isStatus(err, http.StatusConflict) {
		t.Fatalf("stale version: %v", err)
	}
	if _, err := e.admin.SetPolicy(e.ctx, policy.DefaultText(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Trust(e.ctx, 0, 0, false); err != nil {
		t.Fatalf("node reads trust again under the defaults: %v", err)
	}
}

// TestAuthorizeVerifyAndRevoke: /v1/authorize lists a token's actions;
// /v1/verify refuses a revoked token at once after the revocation commits.
func TestAuthorizeVerifyAndRevoke(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	tok := e.adminToken()
	got, err := e.admin.Authorize(e.ctx, tok, "")
	if err != nil || !got.Valid || got.Principal != "ADMIN" || len(got.Actions) != len(policy.Actions()) {
		t.Fatalf("authorize admin token: %+v %v", got, err)
	}
	parsed, err := identity.ParseUnverified(tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Revoke(e.ctx, api.RevokeRequest{Kind: "token", ID: parsed.Claims.ID}); err != nil {
		t.Fatal(err)
	}
	v, err := e.admin.Verify(e.ctx, tok, "")
	if err != nil || v.Valid || !strings.Contains(v.Reason, "revoked") {
		t.Fatalf("verify after revocation: %+v %v", v, err)
	}
	if _, err := e.tokenClient(tok).Status(e.ctx); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("revoked admin token still opens the API: %v", err)
	}
	v, err = e.admin.Verify(e.ctx, "not.a.token", "")
	if err != nil || v.Valid || v.Reason == "" {
		t.Fatalf("garbage token: %+v %v", v, err)
	}
}

// TestJWKSEndpoint: a registered node's key is published with x5c, ETag
// and Cache-Control; a matching If-None-Match gets 304; the discovery
// document points at it.
func TestJWKSEndpoint(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("published", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := agent.Certificate(dir)
	kid, _ := identity.Thumbprint(cert.Leaf.PublicKey)
	body, etag, err := e.admin.JWKS(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	set, err := identity.DecodeJWKS(body, identity.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	k, ok := set.Find(kid)
	if !ok || len(k.X5c) != 2 {
		t.Fatalf("node key %s not published with its chain: %+v", kid, set)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootsPool(t, e)}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+e.srv.APIAddr()+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("conditional JWKS: %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	resp, err = hc.Get("https://" + e.srv.APIAddr() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var disc identity.Discovery
	if err := json.NewDecoder(resp.Body).Decode(&disc); err != nil || !strings.HasSuffix(disc.JWKSURI, "/.well-known/jwks.json") {
		t.Fatalf("discovery %+v %v", disc, err)
	}
}

func rootsPool(t *testing.T, e *env) *x509.CertPool {
	t.Helper()
	roots, err := ca.ReadCertsFile(cluster.RootsPath(e.srv.DataDir()))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return pool
}

// TestRootVerifiesBoundTokens: a token bound to the node's certificate
// verifies at a root server only with that certificate presented.
func TestRootVerifiesBoundTokens(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("bound", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := agent.Certificate(dir)
	tok, _, err := minterOf(t, dir, nil).Mint(identity.MintRequest{Audience: []string{api.Audience(network)}, TTL: time.Minute,
		Principal: identity.PrincipalNode, BindCert: cert.Leaf})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.admin.VerifyRequest(e.ctx, api.TokenRequest{Token: tok, PeerCert: cert.Leaf.Raw}); err != nil || !v.Valid || v.Claims == nil || v.Claims.CertThumbprint == "" {
		t.Fatalf("bound token with its certificate: %+v %v", v, err)
	}
	if v, err := e.admin.Verify(e.ctx, tok, ""); err != nil || v.Valid {
		t.Fatalf("bound token without a certificate: %+v %v", v, err)
	}
	// Presented with another certificate (its issuer's), it is refused.
	if v, err := e.admin.VerifyRequest(e.ctx, api.TokenRequest{Token: tok, PeerCert: cert.Certificate[1]}); err != nil || v.Valid {
		t.Fatalf("bound token with another certificate: %+v %v", v, err)
	}
}
