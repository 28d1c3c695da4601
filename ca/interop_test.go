package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// openssl returns the path of the openssl binary, skipping the test if
// there is none (.ci/run installs it).
func openssl(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/openssl"); err == nil {
		return "/usr/bin/openssl"
	}
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	return p
}

// runOpenSSL runs openssl with args in dir and returns its combined output.
func runOpenSSL(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(openssl(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenSSLHash(t *testing.T) {
	openssl(t)
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	dir := t.TempDir()
	p := newPKI(t, testNetwork, time.Now())
	for _, c := range []*x509.Certificate{p.root.Cert, p.issuer.Cert} {
		path := writeFile(t, dir, "ca.pem", EncodeCertsPEM(c))
		cmd := exec.Command("sh", "-c", `openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`, "sh", path)
		cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl pipeline: %v\n%s", err, out)
		}
		fields := strings.Fields(string(out))
		if len(fields) == 0 || len(fields[0]) != 64 {
			t.Fatalf("unexpected sha256sum output %q", out)
		}
		if want := "sha256:" + fields[0]; Hash(c) != want {
			t.Errorf("Hash = %s, openssl says %s", Hash(c), want)
		}
	}
}

// TestOpenSSLVerify checks the hierarchy with `openssl verify`, as an
// operator would with the /v1/ca/bundle output, including -crl_check.
func TestOpenSSLVerify(t *testing.T) {
	openssl(t)
	now := time.Now()
	dir := t.TempDir()
	p := newPKI(t, testNetwork, now)
	other := newPKI(t, testNetwork, now)
	node, nodeKey := p.node(t, "n1", now)
	node2, _ := p.node(t, "n2", now)
	otherNode, _ := other.node(t, "n1", now)
	srv, err := SignServerTLS(p.issuer, mustKey(t, KeyP384).Public(), testNetwork, "r1", []string{"127.0.0.1", "r1.example.net"}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := SignAdmin(p.root, mustKey(t, KeyEd25519).Public(), testNetwork, "ops", 0, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "roots.pem", EncodeCertsPEM(p.root.Cert))
	writeFile(t, dir, "intermediates.pem", EncodeCertsPEM(p.issuer.Cert))
	writeFile(t, dir, "node.pem", EncodeCertsPEM(node))
	writeFile(t, dir, "node2.pem", EncodeCertsPEM(node2))
	writeFile(t, dir, "other.pem", EncodeCertsPEM(otherNode))
	writeFile(t, dir, "other-intermediates.pem", EncodeCertsPEM(other.issuer.Cert))
	writeFile(t, dir, "server.pem", EncodeCertsPEM(srv))
	writeFile(t, dir, "admin.pem", EncodeCertsPEM(admin))
	// A certificate our issuer signed for a name outside the network, to
	// show that OpenSSL enforces the root's name constraint too.
	outside := forgeAt(t, now, p.issuer, nodeKey, "spiffe://evil.example.net/node/x")
	writeFile(t, dir, "outside.pem", EncodeCertsPEM(outside))

	verify := func(extra ...string) (string, error) {
		args := append([]string{"verify", "-CAfile", "roots.pem", "-untrusted", "intermediates.pem"}, extra...)
		return runOpenSSL(t, dir, args...)
	}
	ok := [][]string{
		{"node.pem"},
		{"-x509_strict", "node.pem"},
		{"-purpose", "sslserver", "node.pem"},
		{"-purpose", "sslclient", "node.pem"},
		{"-x509_strict", "-purpose", "sslserver", "-verify_ip", "127.0.0.1", "server.pem"},
		{"-purpose", "sslclient", "-verify_hostname", "r1.example.net", "server.pem"},
		{"-x509_strict", "-purpose", "sslclient", "admin.pem"},
	}
	for _, args := range ok {
		if out, err := verify(args...); err != nil || !strings.Contains(out, ": OK") {
			t.Errorf("openssl verify %v: %v\n%s", args, err, out)
		}
	}
	bad := []struct {
		args []string
		msg  string
	}{
		{[]string{"other.pem"}, "unable to get local issuer"},
		{[]string{"-untrusted", "other-intermediates.pem", "other.pem"}, "unable to get"},
		{[]string{"-purpose", "sslserver", "admin.pem"}, "unsuitable certificate purpose"},
		{[]string{"-verify_ip", "127.0.0.2", "server.pem"}, "IP address mismatch"},
		{[]string{"outside.pem"}, "permitted subtree violation"},
	}
	for _, tc := range bad {
		out, err := verify(tc.args...)
		if err == nil || !strings.Contains(out, tc.msg) {
			t.Errorf("openssl verify %v succeeded or said something else (want %q): %v\n%s", tc.args, tc.msg, err, out)
		}
	}

	// Revoke node: the issuer's CRL lists it; openssl parses the CRL, finds
	// it signed by the issuer, and refuses node with -crl_check.
	der, err := CreateCRL(p.issuer, []x509.RevocationListEntry{{SerialNumber: node.SerialNumber, RevocationTime: now}}, big.NewInt(1), now, now.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "crl.der", der)
	writeFile(t, dir, "crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	writeFile(t, dir, "chain.pem", EncodeCertsPEM(p.issuer.Cert, p.root.Cert))
	out, err := runOpenSSL(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	serialHex := strings.ToUpper(node.SerialNumber.Text(16))
	if !strings.Contains(out, "Next Update:") || !strings.Contains(strings.ToUpper(out), serialHex) || !strings.Contains(out, "ecdsa-with-SHA384") {
		t.Errorf("openssl crl output lacks nextUpdate, the serial or the algorithm:\n%s", out)
	}
	if out, err := runOpenSSL(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-CAfile", "chain.pem"); err != nil || !strings.Contains(out, "verify OK") {
		t.Errorf("openssl crl signature check: %v\n%s", err, out)
	}
	if out, err := runOpenSSL(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-CAfile", "roots.pem"); err == nil && strings.Contains(out, "verify OK") {
		t.Errorf("openssl finds the CRL signed by the root:\n%s", out)
	}
	if out, err := verify("-crl_check", "-CRLfile", "crl.pem", "node.pem"); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("revoked node passed openssl verify -crl_check: %v\n%s", err, out)
	}
	if out, err := verify("-crl_check", "-CRLfile", "crl.pem", "node2.pem"); err != nil || !strings.Contains(out, ": OK") {
		t.Errorf("unrevoked node refused with -crl_check: %v\n%s", err, out)
	}
}

func forgeAt(t *testing.T, now time.Time, issuer Signer, key crypto.Signer, uri string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	tmpl.URIs = append(tmpl.URIs, mustURL(uri))
	return forge(t, tmpl, issuer, key.Public())
}

// TestOpenSSLRequestsAndKeys: requests and keys made by OpenSSL go through
// our checks, and ours through OpenSSL's.
func TestOpenSSLRequestsAndKeys(t *testing.T) {
	openssl(t)
	dir := t.TempDir()
	gen := func(name string, args ...string) []byte {
		if out, err := runOpenSSL(t, dir, append([]string{"genpkey", "-out", name + ".key"}, args...)...); err != nil {
			t.Fatalf("genpkey %v: %v\n%s", args, err, out)
		}
		if out, err := runOpenSSL(t, dir, "req", "-new", "-key", name+".key", "-subj", "/CN="+name, "-outform", "DER", "-out", name+".csr"); err != nil {
			t.Fatalf("req: %v\n%s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, name+".csr"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"p384", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"}, true},
		{"p256", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"}, true},
		{"ed25519", []string{"-algorithm", "ED25519"}, true},
		{"rsa2048", []string{"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"}, false},
		{"p224", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"}, false},
	} {
		_, err := CheckCSR(gen(tc.name, tc.args...))
		if tc.ok != (err == nil) {
			t.Errorf("%s: CheckCSR = %v, want ok=%v", tc.name, err, tc.ok)
		}
		// Keys from openssl genpkey are PKCS#8; we read the allowed ones.
		if err := os.Chmod(filepath.Join(dir, tc.name+".key"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = ReadKeyFile(filepath.Join(dir, tc.name+".key"))
		if tc.ok != (err == nil) {
			t.Errorf("%s: ReadKeyFile = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Ours through OpenSSL: the CSR verifies, the key file parses.
	key := mustKey(t, KeyP384)
	csr, err := NewCSR(key, Identity{testNetwork, KindNode, "n1"}, []string{"n1.example.net"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ours.csr", csr)
	if out, err := runOpenSSL(t, dir, "req", "-inform", "DER", "-in", "ours.csr", "-verify", "-noout"); err != nil || !strings.Contains(out, "verify OK") {
		t.Errorf("openssl req -verify: %v\n%s", err, out)
	}
	if err := WriteKeyFile(filepath.Join(dir, "ours.key"), key); err != nil {
		t.Fatal(err)
	}
	if out, err := runOpenSSL(t, dir, "pkey", "-in", "ours.key", "-noout", "-check"); err != nil {
		t.Errorf("openssl pkey: %v\n%s", err, out)
	}
}

// TestSPIFFEInterop: go-spiffe reads our node certificates as X509-SVIDs
// against a bundle of our root.
func TestSPIFFEInterop(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	other := newPKI(t, testNetwork, testNow)
	node, key := p.node(t, "n1", testNow)
	otherNode, _ := other.node(t, "n1", testNow)
	td, err := spiffeid.TrustDomainFromString(testNetwork)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{p.root.Cert})
	id, chains, err := x509svid.ParseAndVerify(raw(node, p.issuer.Cert), bundle, x509svid.WithTime(testNow))
	if err != nil {
		t.Fatalf("ParseAndVerify: %v", err)
	}
	if id.String() != "spiffe://mainnet.example.net/node/n1" || len(chains) == 0 {
		t.Errorf("SPIFFE ID %s, %d chains", id, len(chains))
	}
	if _, _, err := x509svid.ParseAndVerify(raw(otherNode, other.issuer.Cert), bundle, x509svid.WithTime(testNow)); err == nil {
		t.Errorf("a node of another root verified against our bundle")
	}
	if _, _, err := x509svid.ParseAndVerify(raw(node, p.issuer.Cert), bundle, x509svid.WithTime(node.NotAfter.Add(time.Second))); err == nil {
		t.Errorf("an expired node certificate verified")
	}
	// The bundle as /v1/ca/bundle serves it (PEM) parses in go-spiffe.
	if _, err := x509bundle.Parse(td, EncodeCertsPEM(p.root.Cert)); err != nil {
		t.Errorf("x509bundle.Parse: %v", err)
	}
	// Certificate and key files as the node agent writes them form an SVID.
	keyPEM, _ := MarshalKeyPEM(key)
	svid, err := x509svid.Parse(EncodeCertsPEM(node, p.issuer.Cert), keyPEM)
	if err != nil || svid.ID.String() != id.String() {
		t.Errorf("x509svid.Parse: %v", err)
	}
	if !bytes.Equal(svid.Certificates[0].Raw, node.Raw) {
		t.Errorf("SVID leaf differs")
	}
}

// TestOpenSSLCrossSign: OpenSSL, trusting only the old root, accepts a node
// of the successor root through the cross certificate, although both roots
// have the same subject name (key identifiers tell them apart).
func TestOpenSSLCrossSign(t *testing.T) {
	openssl(t)
	now := time.Now()
	dir := t.TempDir()
	old := newPKI(t, testNetwork, now)
	next := newPKI(t, testNetwork, now)
	cross, err := CrossSign(old.root, next.root.Cert, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	node, _ := next.node(t, "n1", now)
	writeFile(t, dir, "old.pem", EncodeCertsPEM(old.root.Cert))
	writeFile(t, dir, "untrusted.pem", EncodeCertsPEM(next.issuer.Cert, cross))
	writeFile(t, dir, "inter-only.pem", EncodeCertsPEM(next.issuer.Cert))
	writeFile(t, dir, "node.pem", EncodeCertsPEM(node))
	if out, err := runOpenSSL(t, dir, "verify", "-x509_strict", "-CAfile", "old.pem", "-untrusted", "untrusted.pem", "node.pem"); err != nil || !strings.Contains(out, ": OK") {
		t.Errorf("through the cross certificate: %v\n%s", err, out)
	}
	if out, err := runOpenSSL(t, dir, "verify", "-CAfile", "old.pem", "-untrusted", "inter-only.pem", "node.pem"); err == nil {
		t.Errorf("verified without the cross certificate:\n%s", out)
	}
}
