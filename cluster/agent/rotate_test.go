package agent_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

func minterOf(t *testing.T, dir string, clock func() time.Time) *identity.Minter {
	t.Helper()
	cert, err := agent.Certificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, _ := x509.ParseCertificate(der)
		chain = append(chain, c)
	}
	key, _ := ca.ReadKeyFile(agent.KeyPath(dir))
	m, err := identity.NewMinter(identity.MinterConfig{Key: key, Cert: chain[0], Chain: chain, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRotateKey: after `node rotate-key` the new kid signs; the old kid is
// retiring and verifies the tokens it signed before the rotation, but not
// ones it signs afterwards.
func TestRotateKey(t *testing.T) {
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("rotor", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	aud := api.Audience(network)
	old := minterOf(t, dir, nil)
	before, _, err := old.Mint(identity.MintRequest{Audience: []string{aud}, TTL: 10 * time.Minute, Principal: identity.PrincipalNode})
	if err != nil {
		t.Fatal(err)
	}
	// Tokens minted after the rotation are stamped a little later than it,
	// past the verifier's skew, as a stale process holding the old key would.
	late := func() time.Time { return time.Now().Add(2 * time.Minute) }
	oldLate := minterOf(t, dir, late)

	cert, err := agent.RotateKey(e.ctx, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	newKID, _ := identity.Thumbprint(cert.PublicKey)
	if newKID == old.KID() {
		t.Fatal("rotation kept the key")
	}
	if k, ok := e.srv.Store().JWK(old.KID()); !ok || k.State != fsm.JWKRetiring || k.RetiringSince.IsZero() {
		t.Fatalf("old key after rotation: %+v", k)
	}
	if k, ok := e.srv.Store().JWK(newKID); !ok || k.State != fsm.JWKActive {
		t.Fatalf("new key after rotation: %+v", k)
	}
	if v, err := e.admin.Verify(e.ctx, before, ""); err != nil || !v.Valid {
		t.Fatalf("a token of the old key from before the rotation: %+v %v", v, err)
	}
	after, _, err := oldLate.Mint(identity.MintRequest{Audience: []string{aud}, TTL: 10 * time.Minute, Principal: identity.PrincipalNode})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.admin.Verify(e.ctx, after, ""); err != nil || v.Valid {
		t.Fatalf("a token the old key signed after the rotation: %+v %v", v, err)
	}
	fresh, _, err := minterOf(t, dir, nil).Mint(identity.MintRequest{Audience: []string{aud}, TTL: 10 * time.Minute, Principal: identity.PrincipalNode})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.admin.Verify(e.ctx, fresh, ""); err != nil || !v.Valid || v.KID != newKID {
		t.Fatalf("a token of the new key: %+v %v", v, err)
	}
}
