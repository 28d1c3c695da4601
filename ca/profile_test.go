package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstr     = asn1.ObjectIdentifier{2, 5, 29, 19}
)

func extCritical(t *testing.T, c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	t.Fatalf("certificate %q has no extension %v", c.Subject.CommonName, oid)
	return false
}

// checkCommon checks what every certificate we issue has in common.
func checkCommon(t *testing.T, c *x509.Certificate, issuer *x509.Certificate, now time.Time) {
	t.Helper()
	if c.Version != 3 {
		t.Errorf("version %d, want 3", c.Version)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() != SerialBits+1 {
		t.Errorf("serial %x: %d bits, want %d (positive)", c.SerialNumber, c.SerialNumber.BitLen(), SerialBits+1)
	}
	if back := now.Sub(c.NotBefore); back < 0 || back > time.Minute {
		t.Errorf("notBefore %s is %s before now, want 0..1m", c.NotBefore, back)
	}
	if back := now.Sub(c.NotBefore); back < time.Minute-time.Second {
		t.Errorf("notBefore backdated only %s", back)
	}
	if !c.BasicConstraintsValid {
		t.Errorf("basic constraints missing")
	}
	if !extCritical(t, c, oidKeyUsage) || !extCritical(t, c, oidBasicConstr) {
		t.Errorf("key usage and basic constraints must be critical")
	}
	want, _ := keyID(c.PublicKey)
	if !bytes.Equal(c.SubjectKeyId, want) {
		t.Errorf("subject key id %x, want %x", c.SubjectKeyId, want)
	}
	if issuer != c && !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
		t.Errorf("authority key id %x, want issuer's %x", c.AuthorityKeyId, issuer.SubjectKeyId)
	}
	if !bytes.Equal(c.RawIssuer, issuer.RawSubject) {
		t.Errorf("issuer %q, want %q", c.Issuer, issuer.Subject)
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("signature: %v", err)
	}
	if c.Subject.Organization[0] != "keymesh" {
		t.Errorf("subject O %v", c.Subject.Organization)
	}
}

func uris(c *x509.Certificate) []string {
	var s []string
	for _, u := range c.URIs {
		s = append(s, u.String())
	}
	return s
}

func TestRootProfile(t *testing.T) {
	root, err := NewRoot(testNetwork, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := root.Cert
	checkCommon(t, c, c, testNow)
	if c.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("signature algorithm %s, want ECDSA-SHA384", c.SignatureAlgorithm)
	}
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P384() {
		t.Errorf("root key %s, want P-384", describeKey(c.PublicKey))
	}
	if kt, _ := KeyTypeOf(root.Key.Public()); kt != KeyP384 {
		t.Errorf("root key type %s", kt)
	}
	if !c.IsCA || c.MaxPathLen != 2 {
		t.Errorf("IsCA %v MaxPathLen %d, want CA with path length 2", c.IsCA, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) != 0 {
		t.Errorf("root has EKU %v", c.ExtKeyUsage)
	}
	if c.Subject.CommonName != "keymesh mainnet.example.net AS root" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		t.Errorf("not self-issued")
	}
	if got := c.NotAfter.Sub(testNow); got < 3650*24*time.Hour || got > 3653*24*time.Hour {
		t.Errorf("validity %s, want 10 years", got)
	}
	if !slices.Equal(c.PermittedURIDomains, []string{testNetwork}) || !extCritical(t, c, oidNameConstraints) {
		t.Errorf("name constraints %v (critical %v)", c.PermittedURIDomains, c.PermittedDNSDomainsCritical)
	}
	if len(c.URIs)+len(c.DNSNames)+len(c.IPAddresses) != 0 {
		t.Errorf("root has SANs")
	}
}

func TestIntermediateProfile(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	c := p.issuer.Cert
	checkCommon(t, c, p.root.Cert, testNow)
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA %v MaxPathLen %d zero %v, want CA path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) != 0 {
		t.Errorf("EKU %v", c.ExtKeyUsage)
	}
	if got := uris(c); !slices.Equal(got, []string{"spiffe://mainnet.example.net/root/r1"}) {
		t.Errorf("URIs %v", got)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("signed with %s", c.SignatureAlgorithm)
	}
	if got := c.NotAfter.Sub(testNow); got < 365*24*time.Hour || got > 366*24*time.Hour {
		t.Errorf("validity %s, want 1 year", got)
	}
	if !strings.Contains(c.Subject.CommonName, "r1") {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
}

func TestServerTLSProfile(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP256)
	c, err := SignServerTLS(p.issuer, key.Public(), testNetwork, "r1", []string{"127.0.0.1", "::1", "r1.example.net", "Localhost", "127.0.0.1", "localhost"}, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, c, p.issuer.Cert, testNow)
	if c.IsCA {
		t.Errorf("server cert is a CA")
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("EKU %v", c.ExtKeyUsage)
	}
	if got := uris(c); !slices.Equal(got, []string{"spiffe://mainnet.example.net/root/r1"}) {
		t.Errorf("URIs %v", got)
	}
	if !slices.Equal(c.DNSNames, []string{"r1.example.net", "localhost"}) {
		t.Errorf("DNS %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPs %v", c.IPAddresses)
	}
	if got := c.NotAfter.Sub(testNow); got < 365*24*time.Hour || got > 366*24*time.Hour {
		t.Errorf("validity %s", got)
	}
	// Only what is given: no hosts, no host SANs.
	c2, err := SignServerTLS(p.issuer, key.Public(), testNetwork, "r1", nil, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.DNSNames)+len(c2.IPAddresses) != 0 {
		t.Errorf("hosts added: %v %v", c2.DNSNames, c2.IPAddresses)
	}
	for _, h := range []string{"", "127.0.0.1:8200", "a b", "-x.net", "[::1]:1", "x_y.net", "*.example.net"} {
		if _, err := SignServerTLS(p.issuer, key.Public(), testNetwork, "r1", []string{h}, testNow, nil); !errors.Is(err, ErrHost) {
			t.Errorf("host %q: %v, want ErrHost", h, err)
		}
	}
}

func TestAdminProfile(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyEd25519)
	for _, issuer := range []Signer{p.root, p.issuer} {
		c, err := SignAdmin(issuer, key.Public(), testNetwork, "ops", 0, testNow, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkCommon(t, c, issuer.Cert, testNow)
		if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("IsCA %v KU %b", c.IsCA, c.KeyUsage)
		}
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("EKU %v", c.ExtKeyUsage)
		}
		if got := uris(c); !slices.Equal(got, []string{"spiffe://mainnet.example.net/admin/ops"}) {
			t.Errorf("URIs %v", got)
		}
		if len(c.DNSNames)+len(c.IPAddresses) != 0 {
			t.Errorf("admin has host SANs")
		}
		if !c.NotAfter.Equal(testNow.Add(DefaultAdminValidity).Truncate(time.Second)) {
			t.Errorf("notAfter %s", c.NotAfter)
		}
	}
	c, err := SignAdmin(p.issuer, key.Public(), testNetwork, "ops", time.Hour, testNow, nil)
	if err != nil || !c.NotAfter.Equal(testNow.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("1h admin: %v, %v", c, err)
	}
	if _, err := SignAdmin(p.issuer, key.Public(), testNetwork, "ops", -time.Hour, testNow, nil); !errors.Is(err, ErrValidity) {
		t.Errorf("negative validity: %v", err)
	}
}

func TestNodeProfile(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		t.Run(string(kt), func(t *testing.T) {
			key := mustKey(t, kt)
			c, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "edge-7", DNSNames: []string{"edge-7.example.net", "Edge-7.example.net"}, Now: testNow}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkCommon(t, c, p.issuer.Cert, testNow)
			if !publicKeysEqual(key.Public(), c.PublicKey) {
				t.Errorf("public key not the node's")
			}
			if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA %v KU %b, want leaf with digitalSignature only", c.IsCA, c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}) {
				t.Errorf("EKU %v", c.ExtKeyUsage)
			}
			if got := uris(c); !slices.Equal(got, []string{"spiffe://mainnet.example.net/node/edge-7"}) {
				t.Errorf("URIs %v", got)
			}
			if !slices.Equal(c.DNSNames, []string{"edge-7.example.net"}) || len(c.IPAddresses) != 0 {
				t.Errorf("DNS %v IP %v", c.DNSNames, c.IPAddresses)
			}
			if !c.NotAfter.Equal(testNow.Add(24 * time.Hour).Truncate(time.Second)) {
				t.Errorf("notAfter %s, want now+24h", c.NotAfter)
			}
			if c.SignatureAlgorithm != x509.ECDSAWithSHA384 {
				t.Errorf("signed with %s", c.SignatureAlgorithm)
			}
			if c.Subject.CommonName != "edge-7" {
				t.Errorf("CN %q", c.Subject.CommonName)
			}
			if id, err := IdentityOf(c); err != nil || id != (Identity{testNetwork, KindNode, "edge-7"}) {
				t.Errorf("IdentityOf %v %v", id, err)
			}
		})
	}
	key := mustKey(t, KeyP256)
	c, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "n", Validity: 2 * time.Hour, Now: testNow}, nil)
	if err != nil || !c.NotAfter.Equal(testNow.Add(2*time.Hour).Truncate(time.Second)) || len(c.DNSNames) != 0 {
		t.Errorf("2h node: %v %v", c, err)
	}
}

func TestNotBeforeBackdate(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP256)
	for _, ns := range []int{0, 1, 999_999_999, 500_000_000} {
		now := time.Date(2031, 6, 1, 0, 0, 0, ns, time.UTC)
		c, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "n", Now: now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		back := now.Sub(c.NotBefore)
		if back > time.Minute || back <= time.Minute-time.Second {
			t.Errorf("now %s: notBefore %s, backdated %s, want (59s, 1m]", now, c.NotBefore, back)
		}
	}
}

func TestValidityCappedByIssuer(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP256)
	late := p.issuer.Cert.NotAfter.Add(-time.Hour)
	c, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "n", Now: late}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotAfter.Equal(p.issuer.Cert.NotAfter) {
		t.Errorf("node notAfter %s, issuer %s", c.NotAfter, p.issuer.Cert.NotAfter)
	}
	late = p.root.Cert.NotAfter.Add(-24 * time.Hour)
	inter, err := SignIntermediate(p.root, key.Public(), testNetwork, "r9", late, nil)
	if err != nil || !inter.NotAfter.Equal(p.root.Cert.NotAfter) {
		t.Errorf("intermediate near root expiry: %v %v", inter, err)
	}
}

func TestSignRefusals(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	other := newPKI(t, "other.example.net", testNow)
	good := mustKey(t, KeyP256).Public()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req := func(mut func(*NodeRequest)) NodeRequest {
		r := NodeRequest{PublicKey: good, Network: testNetwork, NodeID: "n1", Now: testNow}
		mut(&r)
		return r
	}
	leaf, _ := p.node(t, "leaf", testNow)
	cases := []struct {
		name   string
		issuer Signer
		req    NodeRequest
		want   error
		msg    string
	}{
		{"rsa key", p.issuer, req(func(r *NodeRequest) { r.PublicKey = &rsaKey.PublicKey }), ErrKeyType, "RSA-2048"},
		{"p224 key", p.issuer, req(func(r *NodeRequest) { r.PublicKey = &p224.PublicKey }), ErrKeyType, "P-224"},
		{"p521 key", p.issuer, req(func(r *NodeRequest) { r.PublicKey = &p521.PublicKey }), ErrKeyType, "P-521"},
		{"no key", p.issuer, req(func(r *NodeRequest) { r.PublicKey = nil }), ErrKeyType, "no key"},
		{"bad network", p.issuer, req(func(r *NodeRequest) { r.Network = "Bad_Net" }), ErrNetwork, "Bad_Net"},
		{"bad id", p.issuer, req(func(r *NodeRequest) { r.NodeID = "a/b" }), ErrName, "a/b"},
		{"empty id", p.issuer, req(func(r *NodeRequest) { r.NodeID = "" }), ErrName, "empty"},
		{"bad dns", p.issuer, req(func(r *NodeRequest) { r.DNSNames = []string{"x y"} }), ErrHost, "x y"},
		{"ip as dns", p.issuer, req(func(r *NodeRequest) { r.DNSNames = []string{"10.1.2.3"} }), ErrHost, "10.1.2.3"},
		{"too many dns", p.issuer, req(func(r *NodeRequest) { r.DNSNames = make([]string, MaxDNSNames+1) }), ErrHost, "at most"},
		{"negative validity", p.issuer, req(func(r *NodeRequest) { r.Validity = -time.Second }), ErrValidity, "outside"},
		{"long validity", p.issuer, req(func(r *NodeRequest) { r.Validity = MaxNodeValidity + time.Second }), ErrValidity, "outside"},
		{"zero now", p.issuer, req(func(r *NodeRequest) { r.Now = time.Time{} }), ErrNoTime, "zero"},
		{"other network's issuer", other.issuer, req(func(*NodeRequest) {}), ErrIssuer, "other.example.net"},
		{"issuer not a CA", Signer{Cert: leaf, Key: p.issuer.Key}, req(func(*NodeRequest) {}), ErrIssuer, "not a CA"},
		{"key mismatch", Signer{Cert: p.issuer.Cert, Key: other.issuer.Key}, req(func(*NodeRequest) {}), ErrIssuer, "does not belong"},
		{"no issuer", Signer{}, req(func(*NodeRequest) {}), ErrIssuer, "missing"},
		{"issuer expired", p.issuer, req(func(r *NodeRequest) { r.Now = p.issuer.Cert.NotAfter.Add(time.Second) }), ErrIssuer, "rotate"},
		{"issuer not yet valid", p.issuer, req(func(r *NodeRequest) { r.Now = testNow.Add(-time.Hour) }), ErrIssuer, "valid from"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := SignNode(tc.issuer, tc.req, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("SignNode = %v, %v; want %v", c, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}

	// The other signing functions refuse the same things.
	if _, err := SignIntermediate(p.root, &rsaKey.PublicKey, testNetwork, "r2", testNow, nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("intermediate with RSA key: %v", err)
	}
	if _, err := SignIntermediate(p.root, good, "other.example.net", "r2", testNow, nil); !errors.Is(err, ErrIssuer) {
		t.Errorf("intermediate for another network: %v", err)
	}
	if _, err := SignIntermediate(p.issuer, good, testNetwork, "r2", testNow, nil); !errors.Is(err, ErrIssuer) || !strings.Contains(err.Error(), "path length 0") {
		t.Errorf("CA under an intermediate: %v", err)
	}
	if _, err := SignServerTLS(p.issuer, good, testNetwork, "../x", nil, testNow, nil); !errors.Is(err, ErrName) {
		t.Errorf("server with bad name: %v", err)
	}
	if _, err := SignAdmin(p.issuer, &p224.PublicKey, testNetwork, "ops", 0, testNow, nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("admin with P-224: %v", err)
	}
	if _, err := NewRoot("", testNow, nil); !errors.Is(err, ErrNetwork) {
		t.Errorf("root without network: %v", err)
	}
	if _, err := NewRoot(testNetwork, time.Time{}, nil); !errors.Is(err, ErrNoTime) {
		t.Errorf("root without time: %v", err)
	}
}

func TestSerials(t *testing.T) {
	seen := make(map[string]bool)
	for i := 0; i < 20000; i++ {
		s, err := NewSerial(nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 || s.BitLen() != SerialBits+1 {
			t.Fatalf("serial %x has %d bits", s, s.BitLen())
		}
		der, _ := asn1.Marshal(s)
		if len(der) != 2+20 {
			t.Fatalf("serial DER %d bytes, want 20 content bytes", len(der)-2)
		}
		if seen[s.String()] {
			t.Fatalf("serial %x repeated after %d", s, i)
		}
		seen[s.String()] = true
	}
	if _, err := NewSerial(bytes.NewReader(make([]byte, 19))); err == nil {
		t.Errorf("short randomness accepted")
	}
	// Serials of issued certificates.
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP256)
	issued := make(map[string]bool)
	for i := 0; i < 150; i++ {
		c, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "n", Now: testNow}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.SerialNumber.BitLen() < 128 || issued[c.SerialNumber.String()] {
			t.Fatalf("certificate %d: serial %x short or repeated", i, c.SerialNumber)
		}
		issued[c.SerialNumber.String()] = true
	}
}

func TestSignNodeIgnoresCSRIdentity(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP384)
	// The node asks for another network, an admin identity and extra names.
	csrDER, err := NewCSR(key, Identity{"evil.example.net", KindAdmin, "root"}, []string{"bank.example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	c, err := SignNode(p.issuer, NodeRequest{PublicKey: csr.PublicKey, Network: testNetwork, NodeID: "approved-1", Now: testNow}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := uris(c); !slices.Equal(got, []string{"spiffe://mainnet.example.net/node/approved-1"}) || len(c.DNSNames) != 0 || c.Subject.CommonName != "approved-1" {
		t.Errorf("certificate copied CSR names: URIs %v DNS %v CN %q", got, c.DNSNames, c.Subject.CommonName)
	}
}
