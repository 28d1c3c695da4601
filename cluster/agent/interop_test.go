package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
)

// TestInteropWithOpenSSLAndSPIFFE checks what the API hands out with tools
// that are not ours: openssl verifies a node certificate against the bundle
// of /v1/ca/bundle, parses the CRL of /v1/ca/crl, and refuses the
// certificate with -crl_check once it is revoked; go-spiffe accepts the
// node certificate as an X.509 SVID of the network's trust domain.
func TestInteropWithOpenSSLAndSPIFFE(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (.ci/run installs it)")
	}
	e := newEnv(t, cluster.Limits{})
	dir, _, err := e.join("interop", e.token(api.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := e.admin.Bundle(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ca.ParseCertsPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var roots, inters []byte
	for _, c := range certs {
		if c.IsCA && c.CheckSignatureFrom(c) == nil {
			roots = append(roots, ca.EncodeCertsPEM(c)...)
		} else {
			inters = append(inters, ca.EncodeCertsPEM(c)...)
		}
	}
	work := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootsPEM, intersPEM := write("roots.pem", roots), write("intermediates.pem", inters)
	nodeCerts, _ := ca.ReadCertsFile(agent.CertPath(dir))
	nodePEM := write("node.pem", ca.EncodeCertsPEM(nodeCerts[0]))
	run := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("verify", "-CAfile", rootsPEM, "-untrusted", intersPEM, nodePEM); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}

	// go-spiffe: the node certificate is an SVID of the network's trust domain.
	td := spiffeid.RequireTrustDomainFromString(network)
	b, err := x509bundle.Parse(td, roots)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.ParseAndVerify([][]byte{nodeCerts[0].Raw, nodeCerts[1].Raw}, b)
	if err != nil {
		t.Fatalf("go-spiffe refused our node certificate: %v", err)
	}
	if id.String() != "spiffe://agent.example/node/interop" {
		t.Fatalf("go-spiffe read %s", id)
	}

	// Revoke, fetch the issuer's CRL, and let openssl check against it.
	if _, err := e.admin.Revoke(e.ctx, api.RevokeRequest{Kind: "cert", ID: nodeCerts[0].SerialNumber.Text(16), Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	der, err := e.admin.CRL(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crlDER := write("crl.der", der)
	if out, err := run("crl", "-inform", "DER", "-in", crlDER, "-noout", "-text"); err != nil || !strings.Contains(out, "Next Update") ||
		!strings.Contains(strings.ToUpper(out), strings.ToUpper(nodeCerts[0].SerialNumber.Text(16))) {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	crlPEM := filepath.Join(work, "crl.pem")
	if out, err := run("crl", "-inform", "DER", "-in", crlDER, "-out", crlPEM); err != nil {
		t.Fatalf("openssl crl to PEM: %v\n%s", err, out)
	}
	out, err := run("verify", "-crl_check", "-CAfile", rootsPEM, "-untrusted", intersPEM, "-CRLfile", crlPEM, nodePEM)
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl verify -crl_check accepted a revoked certificate: %v\n%s", err, out)
	}
}
