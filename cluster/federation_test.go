package cluster

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity"
)

// fedNetwork is a network's AS root and issuer, for federated keys.
type fedNetwork struct {
	t       *testing.T
	name    string
	root    ca.Signer
	issuer  ca.Signer
	created time.Time
}

func newFedNetwork(t *testing.T, name string, now time.Time) *fedNetwork {
	t.Helper()
	root, err := ca.NewRoot(name, now.Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ca.SignIntermediate(root, ik.Public(), name, "r1", now.Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fedNetwork{t: t, name: name, root: root, issuer: ca.Signer{Cert: ic, Key: ik}, created: now}
}

// nodeJWK is the published JWK of a new node id of n, certified for
// validity from now-1h (in the network the certificate names: network).
func (n *fedNetwork) nodeJWK(id, network string, validity time.Duration) identity.JWK {
	n.t.Helper()
	key, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	c, err := ca.SignNode(n.issuer, ca.NodeRequest{PublicKey: key.Public(), Network: network, NodeID: id,
		Validity: validity, Now: n.created.Add(-time.Hour)}, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	j, err := identity.NewJWK(key.Public(), []*x509.Certificate{c, n.issuer.Cert})
	if err != nil {
		n.t.Fatal(err)
	}
	return j
}

// TestFederatedKeys: of a federated network's published JWKS only the
// keys of its nodes that chain to its anchor now are kept, sorted by kid;
// a document that is not a JWKS is refused whole.
func TestFederatedKeys(t *testing.T) {
	now := time.Now()
	fed := newFedNetwork(t, "fed.example.org", now)
	other := newFedNetwork(t, "other.example.org", now)
	good1, good2 := fed.nodeJWK("f-1", fed.name, 24*time.Hour), fed.nodeJWK("f-2", fed.name, 24*time.Hour)
	expired := fed.nodeJWK("f-old", fed.name, 30*time.Minute)
	foreign := other.nodeJWK("o-1", other.name, 24*time.Hour)
	doc, err := identity.JWKS{Keys: []identity.JWK{good1, expired, foreign, good2}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := FederatedKeys(doc, fed.name, []*x509.Certificate{fed.root.Cert}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KID >= keys[1].KID {
		t.Fatalf("kept %d keys (want f-1 and f-2, sorted): %+v", len(keys), keys)
	}
	for _, k := range keys {
		if k.Node != "f-1" && k.Node != "f-2" {
			t.Fatalf("kept %s's key", k.Node)
		}
	}
	// Under another network's anchor, the same document gives nothing.
	if keys, err := FederatedKeys(doc, other.name, []*x509.Certificate{fed.root.Cert}, now); err != nil || len(keys) != 0 {
		t.Fatalf("keys of the wrong anchor kept: %d, %v", len(keys), err)
	}
	for _, bad := range []string{``, `{}`, `[]`, `{"keys":{}}`, `{"keys":[{"kty":"EC"}]}`, `{"keys":[]} trailing`, "{\"keys\":[\xff]}"} {
		if _, err := FederatedKeys([]byte(bad), fed.name, []*x509.Certificate{fed.root.Cert}, now); !errors.Is(err, errFederation) {
			t.Errorf("JWKS %q: err %v, want errFederation", bad, err)
		}
	}
}
