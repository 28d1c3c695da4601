package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"
)

// testNow is the fixed clock of the unit tests.
var testNow = time.Date(2031, 3, 14, 15, 9, 26, 535897932, time.UTC)

const testNetwork = "mainnet.example.net"

// pki is a network's hierarchy for tests: the AS root and one root server's
// issuing intermediate.
type pki struct {
	network string
	root    Signer
	issuer  Signer
}

func newPKI(t testing.TB, network string, now time.Time) *pki {
	t.Helper()
	root, err := NewRoot(network, now, nil)
	if err != nil {
		t.Fatalf("NewRoot: %v", err)
	}
	key := mustKey(t, KeyP384)
	cert, err := SignIntermediate(root, key.Public(), network, "r1", now, nil)
	if err != nil {
		t.Fatalf("SignIntermediate: %v", err)
	}
	return &pki{network: network, root: root, issuer: Signer{Cert: cert, Key: key}}
}

func mustKey(t testing.TB, kt KeyType) crypto.Signer {
	t.Helper()
	k, err := GenerateKey(kt, nil)
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", kt, err)
	}
	return k
}

func (p *pki) node(t testing.TB, id string, now time.Time) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := mustKey(t, KeyP256)
	cert, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: p.network, NodeID: id, DNSNames: []string{id + ".nodes.example.net"}, Now: now}, nil)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	return cert, key
}

func sha256sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
