package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"
	"time"
)

// forge signs a certificate with x509 directly, bypassing the profiles, to
// show what verification does with certificates our API would never make.
func forge(t *testing.T, tmpl *x509.Certificate, parent Signer, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	serial, _ := NewSerial(nil)
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = testNow.Add(-time.Hour)
		tmpl.NotAfter = testNow.Add(time.Hour)
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(nil, tmpl, parent.Cert, pub, parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestChainUsage(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	inters := []*x509.Certificate{p.issuer.Cert}
	roots := []*x509.Certificate{p.root.Cert}
	node, _ := p.node(t, "n1", testNow)
	srv, err := SignServerTLS(p.issuer, mustKey(t, KeyP256).Public(), testNetwork, "r1", []string{"127.0.0.1"}, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := SignAdmin(p.root, mustKey(t, KeyP256).Public(), testNetwork, "ops", 0, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		leaf  *x509.Certificate
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"node server", node, x509.ExtKeyUsageServerAuth, true},
		{"node client", node, x509.ExtKeyUsageClientAuth, true},
		{"node any", node, x509.ExtKeyUsageAny, true},
		{"node code signing", node, x509.ExtKeyUsageCodeSigning, false},
		{"server tls server", srv, x509.ExtKeyUsageServerAuth, true},
		{"server tls client", srv, x509.ExtKeyUsageClientAuth, true},
		{"server tls email", srv, x509.ExtKeyUsageEmailProtection, false},
		{"admin client", admin, x509.ExtKeyUsageClientAuth, true},
		{"admin server", admin, x509.ExtKeyUsageServerAuth, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyChain(tc.leaf, inters, roots, tc.usage, testNow)
			if tc.ok && err != nil {
				t.Fatalf("VerifyChain: %v", err)
			}
			if !tc.ok {
				var inv x509.CertificateInvalidError
				if !errors.Is(err, ErrChain) || !errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage {
					t.Fatalf("VerifyChain = %v, want ErrChain with IncompatibleUsage", err)
				}
			}
		})
	}
	if _, err := VerifyIdentity(node, inters, roots, x509.ExtKeyUsageClientAuth, testNow); err != nil {
		t.Errorf("VerifyIdentity: %v", err)
	}
}

func TestChainRefusals(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	other := newPKI(t, testNetwork, testNow) // same network name, different root
	node, nodeKey := p.node(t, "n1", testNow)
	otherNode, _ := other.node(t, "n1", testNow)

	// A certificate our issuer signed for a name outside the network.
	outside := forge(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "x"},
		URIs:        []*url.URL{mustURL("spiffe://evil.example.net/node/x")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, p.issuer, nodeKey.Public())
	// A CA under the path-length-0 intermediate, and a leaf under that.
	subKey := mustKey(t, KeyP256)
	subCA := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "sub"}, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{mustURL("spiffe://mainnet.example.net/root/sub")},
	}, p.issuer, subKey.Public())
	subLeaf := forge(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "l"}, KeyUsage: x509.KeyUsageDigitalSignature,
		URIs:        []*url.URL{mustURL("spiffe://mainnet.example.net/node/l")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, Signer{Cert: subCA, Key: subKey}, nodeKey.Public())

	roots := []*x509.Certificate{p.root.Cert}
	inters := []*x509.Certificate{p.issuer.Cert}
	cases := []struct {
		name   string
		leaf   *x509.Certificate
		inters []*x509.Certificate
		roots  []*x509.Certificate
		now    time.Time
		check  func(error) bool
	}{
		{"other root", otherNode, []*x509.Certificate{other.issuer.Cert}, roots, testNow, isUnknownAuthority},
		{"other root, our intermediates", otherNode, inters, roots, testNow, isUnknownAuthority},
		{"missing intermediate", node, nil, roots, testNow, isUnknownAuthority},
		{"intermediate as anchor of other", node, inters, []*x509.Certificate{other.root.Cert}, testNow, isUnknownAuthority},
		{"expired", node, inters, roots, node.NotAfter.Add(time.Second), isInvalid(x509.Expired)},
		{"not yet valid", node, inters, roots, node.NotBefore.Add(-time.Second), isInvalid(x509.Expired)},
		{"name outside the network", outside, inters, roots, testNow, isInvalid(x509.CANotAuthorizedForThisName)},
		{"CA under path length 0", subLeaf, []*x509.Certificate{p.issuer.Cert, subCA}, roots, testNow, isInvalid(x509.TooManyIntermediates)},
		{"CA as leaf", p.issuer.Cert, nil, roots, testNow, func(err error) bool { return errors.Is(err, ErrChain) }},
		{"no anchors", node, inters, nil, testNow, func(err error) bool { return errors.Is(err, ErrChain) }},
		{"no time", node, inters, roots, time.Time{}, func(err error) bool { return errors.Is(err, ErrNoTime) }},
		{"no leaf", nil, inters, roots, testNow, func(err error) bool { return errors.Is(err, ErrChain) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyChain(tc.leaf, tc.inters, tc.roots, x509.ExtKeyUsageServerAuth, tc.now)
			if err == nil || !tc.check(err) {
				t.Fatalf("VerifyChain = %v", err)
			}
			if _, err2 := VerifyIdentity(tc.leaf, tc.inters, tc.roots, x509.ExtKeyUsageServerAuth, tc.now); err2 == nil {
				t.Fatalf("VerifyIdentity accepted")
			}
		})
	}
}

func isUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.Is(err, ErrChain) && errors.As(err, &ua)
}

func isInvalid(reason x509.InvalidReason) func(error) bool {
	return func(err error) bool {
		var inv x509.CertificateInvalidError
		return errors.Is(err, ErrChain) && errors.As(err, &inv) && inv.Reason == reason
	}
}

func TestCrossSign(t *testing.T) {
	old := newPKI(t, testNetwork, testNow)
	later := testNow.Add(30 * 24 * time.Hour)
	next := newPKI(t, testNetwork, later)
	cross, err := CrossSign(old.root, next.root.Cert, later, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, cross, old.root.Cert, later)
	if !cross.IsCA || cross.MaxPathLen != 1 || !publicKeysEqual(cross.PublicKey, next.root.Cert.PublicKey) {
		t.Errorf("cross certificate: CA %v path %d", cross.IsCA, cross.MaxPathLen)
	}
	if cross.Subject.String() != next.root.Cert.Subject.String() {
		t.Errorf("subject %q", cross.Subject)
	}
	node, _ := next.node(t, "n1", later)
	// A verifier that trusts only the old root accepts the new hierarchy
	// through the cross certificate.
	if err := VerifyChain(node, []*x509.Certificate{next.issuer.Cert, cross}, []*x509.Certificate{old.root.Cert}, x509.ExtKeyUsageServerAuth, later); err != nil {
		t.Fatalf("through cross certificate: %v", err)
	}
	if err := VerifyChain(node, []*x509.Certificate{next.issuer.Cert}, []*x509.Certificate{old.root.Cert}, x509.ExtKeyUsageServerAuth, later); err == nil {
		t.Fatalf("verified without the cross certificate")
	}
	if _, err := CrossSign(old.issuer, next.root.Cert, later, nil); !errors.Is(err, ErrIssuer) {
		t.Errorf("cross-sign by an intermediate: %v", err)
	}
	if _, err := CrossSign(old.root, node, later, nil); !errors.Is(err, ErrIssuer) {
		t.Errorf("cross-sign of a leaf: %v", err)
	}
}
