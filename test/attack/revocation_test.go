package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/harness"
)

// TestRemovedRootIsCutOff: `keymesh root remove` revokes the removed
// server's issuing certificate, so everything under it stops at once at
// every other root: its admin credential, its TLS certificate on the
// internal calls (it can no longer propose), the node certificates it
// signed and the tokens of those nodes. The AS root key is sealed anew
// under a seal key the removed server does not hold, and a new server
// still joins (the remaining ones open the root with the new key).
func TestRemovedRootIsCutOff(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 3*time.Minute)
	r1, r3 := c.Roots[0], c.Roots[2]
	n := loadNode(t, "signed-by-r3", c.JoinNodeVia(r3, "signed-by-r3", api.CreateJoinTokenRequest{Principal: "NODE"}))
	if id, err := ca.IdentityOf(n.chain[1]); err != nil || id.Name != "r3" {
		t.Fatalf("the node's certificate is not signed by r3's issuer: %v %v", id, err)
	}
	tok := n.bearer(t, c.Network, identity.PrincipalNode)
	admin := c.Client(r1)
	if v, err := admin.Verify(ctx, tok, ""); err != nil || !v.Valid {
		t.Fatalf("before the removal, the node's token: %+v %v", v, err)
	}
	r3Admin := credentialClient(t, c, r1, cluster.CredentialPath(r3.Dir))
	if _, err := r3Admin.Status(ctx); err != nil {
		t.Fatalf("before the removal, r3's admin credential: %v", err)
	}
	r3TLS := rootTLS(t, r3.Dir)
	sealBefore := readFile(t, filepath.Join(r1.Dir, "seal.key"))

	// r3 stays up: a removed server that keeps running is cut off too.
	cmd := exec.CommandContext(ctx, c.Bin, "root", "remove", "r3", "--data-dir", r1.Dir)
	cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keymesh root remove r3: %v\n%s", err, out)
	}

	for _, r := range []*harness.Root{c.Roots[0], c.Roots[1]} {
		_, err := credentialClient(t, c, r, cluster.CredentialPath(r3.Dir)).Status(ctx)
		refused(t, "r3's admin credential at "+r.Name, err, http.StatusForbidden, api.CodeCertRevoked)
		_, err = n.client(t, c, r, "").Trust(ctx, 0, 0, false)
		refused(t, "the node signed by r3 at "+r.Name, err, http.StatusForbidden, api.CodeCertRevoked)
		if status := internalCall(t, r, r3TLS, c.CAFile()); status != http.StatusForbidden {
			t.Errorf("r3's TLS certificate on an internal call to %s: HTTP %d, want 403", r.Name, status)
		}
		v, err := c.Client(r).Verify(ctx, tok, "")
		if err != nil || v.Valid || v.Reason != "revoked_cert" {
			t.Errorf("the token of the node signed by r3 at %s: %+v %v", r.Name, v, err)
		}
	}
	// A write through the removed server does not get through.
	if _, err := c.Client(r3).Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "from-r3"}); err == nil {
		t.Error("a write through the removed server was acknowledged")
	}
	// The node renews no more, at any remaining server.
	_, err := n.client(t, c, r1, "").Renew(ctx, csrWith(t, c.Network, n))
	refused(t, "renewal of the node signed by r3", err, http.StatusForbidden, api.CodeCertRevoked)

	// A new seal key for the remaining servers, not for r3.
	sealAfter := readFile(t, filepath.Join(r1.Dir, "seal.key"))
	if bytes.Equal(sealBefore, sealAfter) {
		t.Fatal("the seal key was not rotated")
	}
	waitFile(t, filepath.Join(c.Roots[1].Dir, "seal.key"), sealAfter)
	if bytes.Equal(readFile(t, filepath.Join(r3.Dir, "seal.key")), sealAfter) {
		t.Fatal("the removed server holds the new seal key")
	}
	c.Kill(r3)
	c.Remove(r3)
	// The remaining servers open the AS root with the new key: a new
	// server joins through each of them.
	c.JoinVia(c.Roots[1], "r4")
	converged(t, c)
}

// TestRevokedKeyEverywhere: once a node's key is revoked, every
// certificate carrying it (its current and its previous one) fails mutual
// TLS at every root server, neither renews, with or without a new key, and
// the node's tokens are refused.
func TestRevokedKeyEverywhere(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 2*time.Minute)
	dir := c.JoinNode("keyed", api.CreateJoinTokenRequest{Principal: "NODE"})
	prev := loadNode(t, "keyed", dir)
	if _, err := agent.Renew(ctx, dir); err != nil {
		t.Fatal(err)
	}
	cur := loadNode(t, "keyed", dir)
	kid, _ := identity.Thumbprint(cur.chain[0].PublicKey)
	tok := cur.bearer(t, c.Network, identity.PrincipalNode)
	admin := c.Client(c.Roots[0])
	if _, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "key", ID: kid, Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Roots {
		c.WaitCaughtUp(r, mustIndex(t, admin, ctx), 10*time.Second)
		for _, n := range []node{prev, cur} {
			_, err := n.client(t, c, r, "").Trust(ctx, 0, 0, false)
			refused(t, "a certificate carrying the revoked key at "+r.Name, err, http.StatusForbidden, api.CodeKeyRevoked)
		}
		v, err := c.Client(r).Verify(ctx, tok, "")
		if err != nil || v.Valid || v.Reason != "revoked_key" {
			t.Errorf("a token under the revoked key at %s: %+v %v", r.Name, v, err)
		}
	}
	_, err := agent.Renew(ctx, dir)
	refused(t, "renewal under the revoked key", err, http.StatusForbidden, api.CodeKeyRevoked)
	_, err = agent.RotateKey(ctx, dir, "")
	refused(t, "renewal with a new key, authenticated by the revoked one", err, http.StatusForbidden, api.CodeKeyRevoked)
}

// TestRenewalTrustsTheCertificate: a revoked certificate cannot renew, not
// even with an ADMIN bearer token beside it; renewal authenticates by the
// presented certificate alone.
func TestRenewalTrustsTheCertificate(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx := ctxT(t, time.Minute)
	n := join(t, c, "renewer", "NODE")
	admin := c.Client(c.Roots[0])
	if _, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "cert", ID: identity.SerialHex(n.chain[0]), Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	adminToken := strings.TrimSpace(string(readFile(t, cluster.AdminTokenPath(c.Roots[0].Dir))))
	cl := n.client(t, c, c.Roots[0], adminToken)
	_, err := cl.Renew(ctx, csrWith(t, c.Network, n))
	refused(t, "renewal of a revoked certificate with an ADMIN bearer beside it", err, http.StatusForbidden, api.CodeCertRevoked)
	bearerOnly, err := client.New(client.Config{Server: c.Roots[0].APIAddr, CAFile: c.CAFile(), Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	defer bearerOnly.Close()
	_, err = bearerOnly.Renew(ctx, csrWith(t, c.Network, n))
	refused(t, "renewal with a bearer and no certificate", err, http.StatusUnauthorized, "unauthorized")
}

// TestRevocationsKeptAsPromised: a node's revocation is kept for good (a
// prune_after is refused); a certificate's is kept at least until the
// certificate expires (an earlier prune_after is refused), and the
// issuer's CRL lists it meanwhile.
func TestRevocationsKeptAsPromised(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx := ctxT(t, time.Minute)
	n := join(t, c, "kept", "NODE")
	admin := c.Client(c.Roots[0])
	soon := time.Now().Add(time.Hour)
	_, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "node", ID: "kept", PruneAfter: &soon})
	refused(t, "a node revocation with prune_after", err, http.StatusBadRequest, "bad_request")
	serial := identity.SerialHex(n.chain[0])
	_, err = admin.Revoke(ctx, api.RevokeRequest{Kind: "cert", ID: serial, PruneAfter: &soon})
	refused(t, "a certificate revocation pruned before the certificate expires", err, http.StatusBadRequest, "bad_request")
	rev, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "cert", ID: serial})
	if err != nil || !rev.Revocation.PruneAfter.Equal(n.chain[0].NotAfter) {
		t.Fatalf("certificate revocation: %+v %v, want it kept until %s", rev, err, n.chain[0].NotAfter)
	}
	node, err := admin.Revoke(ctx, api.RevokeRequest{Kind: "node", ID: "kept"})
	if err != nil || !node.Revocation.PruneAfter.IsZero() {
		t.Fatalf("node revocation: %+v %v, want it kept for good", node, err)
	}
	der, err := admin.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Revoked(crl, n.chain[0].SerialNumber) {
		t.Fatalf("the CRL does not list the revoked certificate %s", serial)
	}
}

// TestRevokedAgentStops: a revoked node's agent answers every local call
// with node_revoked, saying why, and exits.
func TestRevokedAgentStops(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx := ctxT(t, time.Minute)
	dir := c.JoinNode("doomed", api.CreateJoinTokenRequest{Principal: "NODE"})
	a := c.RunAgent("doomed", dir, "--revoked-linger", "3s")
	if _, err := c.Client(c.Roots[0]).Revoke(ctx, api.RevokeRequest{Kind: "node", ID: "doomed", Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := lc.Mint(ctx, agent.MintRequest{Audience: agent.Audience{"spiffe://" + c.Network + "/node/x"}})
		var le *agent.LocalAPIError
		if errors.As(err, &le) && le.Code == agent.CodeRevoked {
			if !strings.Contains(le.Message, "revoked") || le.Status != http.StatusForbidden {
				t.Fatalf("the refusal: %+v", le)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked agent still answers: %v\n%s", err, a.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling a real process
	}
	if err := a.Wait(t, 20*time.Second); err == nil {
		t.Fatalf("the revoked agent exited with status 0:\n%s", a.Log())
	}
	if !strings.Contains(a.Log(), "is revoked") {
		t.Fatalf("the agent's last words do not say it is revoked:\n%s", a.Log())
	}
}

// credentialClient is a client of r authenticated by the credential file.
func credentialClient(t *testing.T, c *harness.Cluster, r *harness.Root, cred string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Server: r.APIAddr, CAFile: c.CAFile(), Credential: cred, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// rootTLS is a root server's TLS certificate and key from its data dir.
func rootTLS(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// internalCall asks r for a read index with cert, as another root server
// would, and returns the HTTP status.
func internalCall(t *testing.T, r *harness.Root, cert tls.Certificate, caFile string) int {
	t.Helper()
	status, _ := internalPost(t, r, cert, caFile, "/v1/internal/read-index", []byte("{}"), nil)
	return status
}

// internalPost POSTs body with the headers hdr to the internal call path
// of r with cert, as another root server would, and returns the HTTP status
// and the answer.
func internalPost(t *testing.T, r *harness.Root, cert tls.Certificate, caFile, path string, body []byte, hdr http.Header) (int, []byte) {
	t.Helper()
	roots, err := ca.ReadCertsFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "https://"+r.APIAddr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("internal call to %s: %v", r.Name, err)
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("internal call to %s: %v", r.Name, err)
	}
	return resp.StatusCode, ans
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFile waits until path holds want (a server writes it in the
// background).
func waitFile(t *testing.T, path string, want []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold the new seal key", path)
		}
		time.Sleep(20 * time.Millisecond) // polling a real process
	}
}

// csrWith is a CSR of the node's own key.
func csrWith(t *testing.T, network string, n node) []byte {
	t.Helper()
	csr, err := ca.NewCSR(n.key, ca.Identity{Network: network, Kind: ca.KindNode, Name: n.id}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// mustIndex is the index of a consistent read at the admin's server.
func mustIndex(t *testing.T, admin *client.Client, ctx context.Context) uint64 {
	t.Helper()
	st, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.AppliedIndex
}
