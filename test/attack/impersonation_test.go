package attack

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/test/harness"
)

// TestNodeNamesAreTheirOwn: a node's certificate names only what is its
// own: DNS names under the network's domain, <node-id>.<network> by
// default and what its join token allows, never localhost, an IP address,
// another domain, or a name another node holds.
func TestNodeNamesAreTheirOwn(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx := ctxT(t, time.Minute)
	admin := c.Client(c.Roots[0])
	dns := func(names ...string) []string { return names }
	own := "taker." + c.Network
	taker := join(t, c, "taker", "NODE", "--dns", own)
	if got := taker.chain[0].DNSNames; len(got) != 1 || got[0] != own {
		t.Fatalf("the node's DNS names: %v", got)
	}
	tok := func(names ...string) string {
		t.Helper()
		tk, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", DNSNames: names})
		if err != nil {
			t.Fatal(err)
		}
		return tk.Secret
	}
	for _, tc := range []struct {
		names  []string
		status int
		code   string
	}{
		{dns("localhost"), http.StatusBadRequest, "bad_request"},
		{dns("127.0.0.1"), http.StatusBadRequest, "bad_request"},
		{dns("r1.example.org"), http.StatusBadRequest, "bad_request"},
		{dns("*." + c.Network), http.StatusBadRequest, "bad_request"},
		{dns(own), http.StatusConflict, "conflict"},
		{dns("web." + c.Network), http.StatusForbidden, "token_constraint"},
	} {
		_, err := admin.Register(ctx, api.RegisterRequest{CSR: csrFor(t, c.Network, "squatter"), NodeID: "squatter", Token: tok(), DNSNames: tc.names})
		refused(t, "a registration naming "+strings.Join(tc.names, ","), err, tc.status, tc.code)
	}
	// An operator allows more per token.
	if _, err := admin.Register(ctx, api.RegisterRequest{CSR: csrFor(t, c.Network, "web"), NodeID: "web", Token: tok("www." + c.Network),
		DNSNames: dns("www."+c.Network, "web."+c.Network)}); err != nil {
		t.Fatalf("a registration for names the token allows: %v", err)
	}
	_, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", DNSNames: dns("localhost")})
	refused(t, "a token allowing localhost", err, http.StatusBadRequest, "bad_request")
}

// TestClientsTalkToRootsOnly: a fake server presenting a valid node
// certificate of the network, even one valid for the address dialled (as
// a node could get before names were checked), is refused by every
// keymesh client before anything is sent: the CLI, `node join` (first
// contact by CA hash), `root join`, and the node agent following the
// trust state. The fake server sees no HTTP request at all, so no token
// and no credential reaches it.
func TestClientsTalkToRootsOnly(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	r1 := c.Roots[0]
	ctx := ctxT(t, 2*time.Minute)
	fake, requests := fakeRoot(t, r1.Dir, c.Network)
	env := append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=", "KEYMESH_TOKEN=")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, c.Bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("keymesh %s talked to the fake server:\n%s", strings.Join(args, " "), out)
		}
		return string(out)
	}
	adminToken := cluster.AdminTokenPath(r1.Dir)
	out := run("revocations", "list", "--server", fake, "--ca-file", c.CAFile(), "--token-file", adminToken)
	if !strings.Contains(out, "not a root server") {
		t.Errorf("the CLI's refusal does not say why: %s", out)
	}
	run("revocations", "list", "--server", fake, "--ca-file", c.CAFile(), "--credential", c.Credential())
	out = run("node", "join", "--server", fake, "--ca-hash", c.CAHash, "--network", c.Network, "--node-id", "victim",
		"--data-dir", filepath.Join(t.TempDir(), "victim"), "--token", "kmjt.secret-of-the-victim")
	if !strings.Contains(out, "not a root server") {
		t.Errorf("node join's refusal does not say why: %s", out)
	}
	out = run("root", "join", "--join", fake, "--token", "kmjt.secret-of-the-victim", "--ca-hash", c.CAHash, "--name", "r9",
		"--data-dir", filepath.Join(t.TempDir(), "r9"), "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0")
	if !strings.Contains(out, "not a root server") {
		t.Errorf("root join's refusal does not say why: %s", out)
	}
	// An agent whose node.json points at the fake server, with no trust
	// document to find the real roots in.
	dir := c.JoinNode("misled", api.CreateJoinTokenRequest{Principal: "NODE"})
	redirect(t, dir, fake)
	a := &harness.Agent{Name: "misled", Dir: dir}
	c.StartProc(a, "node", "run", "--data-dir", dir)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.Log(), "not a root server") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not refuse the fake server:\n%s", a.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling a real process
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the fake server saw %d HTTP requests", n)
	}
}

// fakeRoot serves HTTPS on localhost with a node certificate of the
// network signed by a real issuer (from a root's data directory), valid
// for localhost, and counts the HTTP requests it gets.
func fakeRoot(t *testing.T, rootDir, network string) (string, *atomic.Int64) {
	t.Helper()
	issuerKey, err := ca.ReadKeyFile(filepath.Join(rootDir, "issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	issuerCerts, err := ca.ReadCertsFile(filepath.Join(rootDir, "issuer.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := ca.ReadCertsFile(filepath.Join(rootDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignNode(ca.Signer{Cert: issuerCerts[0], Key: issuerKey}, ca.NodeRequest{PublicKey: key.Public(), Network: network,
		NodeID: "impostor", DNSNames: []string{"localhost"}, Now: time.Now()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range []*x509.Certificate{leaf, issuerCerts[0], roots[0]} {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	srv := &http.Server{
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			t.Errorf("the fake server got %s %s (Authorization %q)", r.Method, r.URL.Path, r.Header.Get("Authorization"))
			w.WriteHeader(http.StatusTeapot)
		}),
		ErrorLog: nil,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "localhost:" + port, &requests
}

// redirect points the node in dir at server.
func redirect(t *testing.T, dir, server string) {
	t.Helper()
	path := filepath.Join(dir, "node.json")
	var st map[string]any
	if err := json.Unmarshal(readFile(t, path), &st); err != nil {
		t.Fatal(err)
	}
	st["server"] = server
	b, _ := json.Marshal(st)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
