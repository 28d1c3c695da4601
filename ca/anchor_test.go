package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

// TestCheckAnchor: what `keymesh trust add` refuses as another network's
// anchor, each with ErrAnchor: no certificate, not a CA, a CA that may not
// sign certificates, not valid now, not self-signed (an intermediate), not
// constrained to that network, and a malformed network name.
func TestCheckAnchor(t *testing.T) {
	fed := newPKI(t, "testnet.example.net", testNow)
	leaf, _ := fed.node(t, "n-1", testNow)
	// A self-signed CA constrained to the network, without keyCertSign.
	key := mustKey(t, KeyP256)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "no cert sign"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, PermittedURIDomains: []string{"testnet.example.net"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	noSign, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckAnchor([]*x509.Certificate{fed.root.Cert}, "testnet.example.net", testNow.Add(time.Minute)); err != nil {
		t.Fatalf("the network's AS root refused: %v", err)
	}
	for _, tc := range []struct {
		name    string
		roots   []*x509.Certificate
		network string
		now     time.Time
	}{
		{"no certificate", nil, "testnet.example.net", testNow},
		{"a node certificate", []*x509.Certificate{leaf}, "testnet.example.net", testNow},
		{"a CA without keyCertSign", []*x509.Certificate{noSign}, "testnet.example.net", testNow},
		{"expired", []*x509.Certificate{fed.root.Cert}, "testnet.example.net", fed.root.Cert.NotAfter.Add(time.Second)},
		{"not yet valid", []*x509.Certificate{fed.root.Cert}, "testnet.example.net", fed.root.Cert.NotBefore.Add(-time.Hour)},
		{"an intermediate", []*x509.Certificate{fed.issuer.Cert}, "testnet.example.net", testNow.Add(time.Minute)},
		{"another network's name", []*x509.Certificate{fed.root.Cert}, "mainnet.example.net", testNow.Add(time.Minute)},
		{"a good root beside a bad one", []*x509.Certificate{fed.root.Cert, leaf}, "testnet.example.net", testNow.Add(time.Minute)},
		{"a malformed network", []*x509.Certificate{fed.root.Cert}, "-testnet", testNow.Add(time.Minute)},
	} {
		if err := CheckAnchor(tc.roots, tc.network, tc.now); !errors.Is(err, ErrAnchor) {
			t.Errorf("%s: %v, want ErrAnchor", tc.name, err)
		}
	}
}
