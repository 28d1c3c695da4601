package attack

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/harness"
)

// node is a registered node's credentials, as an attacker holding its data
// directory has them.
type node struct {
	id    string
	dir   string
	key   crypto.Signer
	chain []*x509.Certificate // leaf, issuing intermediate
	tls   tls.Certificate
}

func loadNode(t *testing.T, id, dir string) node {
	t.Helper()
	key, err := ca.ReadKeyFile(agent.KeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.ReadCertsFile(agent.CertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	n := node{id: id, dir: dir, key: key, chain: chain, tls: tls.Certificate{PrivateKey: key, Leaf: chain[0]}}
	for _, c := range chain {
		n.tls.Certificate = append(n.tls.Certificate, c.Raw)
	}
	return n
}

// join registers a node of principal p (a join token made by the admin)
// and returns its credentials.
func join(t *testing.T, c *harness.Cluster, id, p string, extra ...string) node {
	t.Helper()
	return loadNode(t, id, c.JoinNode(id, api.CreateJoinTokenRequest{Principal: p}, extra...))
}

// bearer mints a token of the node's principal p for the root servers' API,
// under the node's own key, as anyone holding the node's key can.
func (n node) bearer(t *testing.T, network string, p identity.Principal) string {
	t.Helper()
	m, err := identity.NewMinter(identity.MinterConfig{Key: n.key, Cert: n.chain[0], Chain: n.chain[1:]})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := m.Mint(identity.MintRequest{Audience: []string{api.Audience(network)}, TTL: 10 * time.Minute, Principal: p})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is an API client of root r authenticated as the node: by its
// client certificate, and by token when not "".
func (n node) client(t *testing.T, c *harness.Cluster, r *harness.Root, token string) *client.Client {
	t.Helper()
	cert := n.tls
	cl, err := client.New(client.Config{Server: r.APIAddr, CAFile: c.CAFile(), Certificate: &cert, Token: token, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// refused fails the test unless err is an API error with status and code.
func refused(t *testing.T, what string, err error, status int, code string) *api.APIError {
	t.Helper()
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("%s: %v, want HTTP %d %s", what, err, status, code)
	}
	if ae.Message == "" {
		t.Fatalf("%s: refused without saying why", what)
	}
	return ae
}

// converged returns the state hash the running roots agree on.
func converged(t *testing.T, c *harness.Cluster) string {
	t.Helper()
	return c.WaitConverged(30 * time.Second)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
