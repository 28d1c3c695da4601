package ca

import (
	"crypto/x509"
	"testing"
)

func TestSmokeHierarchy(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	leaf, _ := p.node(t, "n1", testNow)
	id, err := VerifyIdentity(leaf, []*x509.Certificate{p.issuer.Cert}, []*x509.Certificate{p.root.Cert}, x509.ExtKeyUsageServerAuth, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if id != (Identity{testNetwork, KindNode, "n1"}) {
		t.Fatalf("identity %v", id)
	}
}
