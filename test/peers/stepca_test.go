//go:build peers

package peers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/test/harness"
)

// stepCAModule is the step-ca module the benchmark is written against.
const stepCAModule = "github.com/smallstep/certificates"

// stepCABinary returns the step-ca binary: $STEPCA_BIN if set, else step-ca
// on PATH, else $(go env GOPATH)/bin/step-ca (where test/peers/install.sh
// puts it).
func stepCABinary(t testing.TB) string {
	t.Helper()
	const hint = "step-ca is not installed: make bench-peers builds it (CGO_ENABLED=0 go install github.com/smallstep/certificates/cmd/step-ca@v0.30.2)"
	if p := os.Getenv("STEPCA_BIN"); p != "" {
		if !stepIsExecutable(p) {
			t.Fatalf("%s ($STEPCA_BIN=%s is not an executable file)", hint, p)
		}
		return p
	}
	if p, err := exec.LookPath("step-ca"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, gp := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if p := filepath.Join(gp, "bin", "step-ca"); stepIsExecutable(p) {
				return p
			}
		}
	}
	t.Fatal(hint)
	return ""
}

func stepIsExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// stepCA is a standalone step-ca process: a single CA with a badgerv2
// database, a P-384 root, a P-256 intermediate and one JWK provisioner whose
// private key only the benchmark holds.
type stepCA struct {
	url     string // https://127.0.0.1:<port>
	version string // e.g. "v0.30.2 (CGO_ENABLED=0)"
	roots   *x509.CertPool
	client  *http.Client

	provName string
	provKid  string // RFC 7638 thumbprint of the provisioner's public JWK
	provKey  *ecdsa.PrivateKey

	logPath string // step-ca's stdout and stderr
	calls   atomic.Int64
}

// startStepCA writes a step-ca configuration under dir (t.TempDir() by the
// caller) and starts step-ca as a process on a free 127.0.0.1 port; returns
// when GET /health answers ok. t.Cleanup stops it (SIGTERM then kill) and
// waits.
func startStepCA(t testing.TB, bin, dir string) *stepCA {
	t.Helper()
	s := &stepCA{provName: "bench", logPath: filepath.Join(dir, "step-ca.log")}
	var err error
	if s.version, err = stepCAVersion(bin); err != nil {
		t.Fatal(err)
	}

	rootKey, root := stepMustCA(t, "keymesh bench step-ca root", elliptic.P384(), nil, nil)
	interKey, inter := stepMustCA(t, "keymesh bench step-ca intermediate", elliptic.P256(), root, rootKey)
	s.roots = x509.NewCertPool()
	s.roots.AddCert(root)
	interDER, err := x509.MarshalECPrivateKey(interKey)
	if err != nil {
		t.Fatalf("marshal intermediate key: %v", err)
	}
	if s.provKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatalf("provisioner key: %v", err)
	}
	jwk, kid, err := stepPublicJWK(&s.provKey.PublicKey)
	if err != nil {
		t.Fatalf("provisioner JWK: %v", err)
	}
	s.provKid = kid

	addr := harness.FreePort(t)
	s.url = "https://" + addr

	paths := map[string]string{
		"root": filepath.Join(dir, "root_ca.crt"),
		"crt":  filepath.Join(dir, "intermediate_ca.crt"),
		"key":  filepath.Join(dir, "intermediate_ca_key"),
		"ca":   filepath.Join(dir, "ca.json"),
	}
	cfg := map[string]any{
		"root":     paths["root"],
		"crt":      paths["crt"],
		"key":      paths["key"],
		"address":  addr,
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"db":       map[string]any{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{"type": "JWK", "name": s.provName, "key": jwk}},
		},
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("marshal ca.json: %v", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{paths["root"], stepPEM("CERTIFICATE", root.Raw), 0o644},
		{paths["crt"], stepPEM("CERTIFICATE", inter.Raw), 0o644},
		{paths["key"], stepPEM("EC PRIVATE KEY", interDER), 0o600},
		{paths["ca"], cfgJSON, 0o644},
	} {
		if err := os.WriteFile(f.path, f.data, f.perm); err != nil {
			t.Fatalf("write step-ca configuration: %v", err)
		}
	}

	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("step-ca log: %v", err)
	}
	cmd := exec.Command(bin, paths["ca"])
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(dir, "step"), "NO_COLOR=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start step-ca: %v", err)
	}
	logFile.Close() // the child holds its own descriptor
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	s.client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: newStepTransport(s.roots),
	}
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.health(t.Context())
		if err == nil {
			return s
		}
		select {
		case werr := <-exited:
			exited <- werr // let the cleanup see it
			t.Fatalf("step-ca exited before it was healthy (%v); %s:\n%s", werr, s.logPath, stepTail(s.logPath))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("step-ca not healthy after 30s: %v; %s:\n%s", err, s.logPath, stepTail(s.logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newStepTransport returns an HTTP/1.1 keep-alive transport that
// verifies the server against roots.
func newStepTransport(roots *x509.CertPool) *http.Transport {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Transport{
		Protocols:           &protos,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
}

// health returns nil when GET /health answers {"status":"ok"}.
func (s *stepCA) health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return fmt.Errorf("GET /health: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || h.Status != "ok" {
		return fmt.Errorf("GET /health: %s, status %q", resp.Status, h.Status)
	}
	return nil
}

// Conditions describes the step-ca side in one line for the benchmark table.
func (s *stepCA) Conditions() string {
	// The badgerv2 driver of github.com/smallstep/nosql opens badger with
	// badger.DefaultOptions, whose SyncWrites is true: the value log is opened
	// O_DSYNC, so every committed write batch is on disk before the commit
	// returns. A signature is two such commits (used_ott, then x509_certs
	// with x509_certs_data).
	return fmt.Sprintf("step-ca %s, standalone, badgerv2 database (fsync per write: badger SyncWrites default, O_DSYNC value log; 2 commits per signature), "+
		"P-384 root, P-256 intermediate, JWK provisioner ES256 one-time tokens, 24h leaves, POST /1.0/sign over HTTPS/1.1 keep-alive", s.version)
}

// stepCAVersion returns the version of bin with how it was built. `step-ca
// version` prints 0000000-dev for a `go install` build (its Makefile sets the
// version with -ldflags), so the module version embedded in the binary is
// preferred then.
func stepCAVersion(bin string) (string, error) {
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s version: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	// "Smallstep CA/0.30.2 (linux/amd64)"
	first, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimSpace(first)
	if _, after, ok := strings.Cut(v, "/"); ok {
		v, _, _ = strings.Cut(after, " ")
	}
	var extra []string
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		if bi.Main.Path == stepCAModule && bi.Main.Version != "" && bi.Main.Version != "(devel)" &&
			(strings.Contains(v, "dev") || v == "N/A" || v == "") {
			v = bi.Main.Version
		}
		for _, set := range bi.Settings {
			if set.Key == "CGO_ENABLED" {
				extra = append(extra, "CGO_ENABLED="+set.Value)
			}
		}
	}
	if v != "" && v[0] >= '0' && v[0] <= '9' && !strings.Contains(v, "dev") {
		v = "v" + v
	}
	if len(extra) > 0 {
		v += " (" + strings.Join(extra, ", ") + ")"
	}
	return v, nil
}

// SignOp prepares n certificate requests with leaf keys of keyType ("p256"
// or "p384") and n one-time tokens, and returns the operation that POSTs
// request i to /1.0/sign. The operation returns nil only on a 2xx response
// whose certificate parses, has the request's public key and chains to the
// CA's root.
func (s *stepCA) SignOp(t testing.TB, keyType string, n int) op {
	t.Helper()
	var curve elliptic.Curve
	switch keyType {
	case "p256":
		curve = elliptic.P256()
	case "p384":
		curve = elliptic.P384()
	default:
		t.Fatalf("SignOp: key type %q: want p256 or p384", keyType)
	}
	call := s.calls.Add(1)
	aud := s.url + "/1.0/sign"
	type prepared struct {
		cn   string
		pub  *ecdsa.PublicKey
		body []byte
	}
	reqs := make([]prepared, n)
	for i := range reqs {
		cn := fmt.Sprintf("stepca-%s-%d-%d.peers.test", keyType, call, i)
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatalf("SignOp: leaf key: %v", err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: cn},
			DNSNames: []string{cn},
		}, key)
		if err != nil {
			t.Fatalf("SignOp: CSR: %v", err)
		}
		ott, err := s.token(cn, aud)
		if err != nil {
			t.Fatalf("SignOp: token: %v", err)
		}
		body, err := json.Marshal(map[string]string{
			"csr": string(stepPEM("CERTIFICATE REQUEST", csr)),
			"ott": ott,
		})
		if err != nil {
			t.Fatalf("SignOp: request body: %v", err)
		}
		reqs[i] = prepared{cn: cn, pub: &key.PublicKey, body: body}
	}
	return func(ctx context.Context, i int) error {
		r := reqs[i]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, aud, bytes.NewReader(r.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.client.Do(req)
		if err != nil {
			return fmt.Errorf("POST /1.0/sign: %w", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return fmt.Errorf("POST /1.0/sign: read response: %w", err)
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST /1.0/sign: %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return s.checkSignResponse(b, r.cn, r.pub)
	}
}

// checkSignResponse checks that a /1.0/sign response holds a certificate for
// pub that chains to the root and names cn.
func (s *stepCA) checkSignResponse(body []byte, cn string, pub *ecdsa.PublicKey) error {
	var sr struct {
		Crt       string   `json:"crt"`
		CA        string   `json:"ca"`
		CertChain []string `json:"certChain"`
	}
	if err := json.Unmarshal(body, &sr); err != nil {
		return fmt.Errorf("sign response: %w", err)
	}
	leaf, err := stepParseCert(sr.Crt)
	if err != nil {
		return fmt.Errorf("sign response crt: %w", err)
	}
	if !pub.Equal(leaf.PublicKey) {
		return errors.New("sign response: certificate does not have the request's public key")
	}
	inter := x509.NewCertPool()
	for _, p := range append(sr.CertChain, sr.CA) {
		if c, err := stepParseCert(p); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       cn,
		Roots:         s.roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("sign response: certificate does not verify: %w", err)
	}
	return nil
}

// token returns a one-time token of the JWK provisioner for a certificate
// named cn: a compact ES256 JWS.
func (s *stepCA) token(cn, aud string) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	// step-ca rejects tokens issued before it started, and iat has second
	// precision: round up so a token made within step-ca's first second is
	// not rejected. Its validation allows a minute of skew.
	now := time.Now().Truncate(time.Second).Add(time.Second).Unix()
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": s.provKid, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss":  s.provName,
		"aud":  aud,
		"sub":  cn,
		"sans": []string{cn},
		"iat":  now,
		"nbf":  now,
		"exp":  now + int64((5 * time.Minute).Seconds()),
		"jti":  hex.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding
	signing := b64.EncodeToString(header) + "." + b64.EncodeToString(claims)
	h := sha256.Sum256([]byte(signing))
	r, sig, err := ecdsa.Sign(rand.Reader, s.provKey, h[:])
	if err != nil {
		return "", err
	}
	raw := make([]byte, 64) // JOSE: r || s, each 32 bytes for P-256
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	return signing + "." + b64.EncodeToString(raw), nil
}

// stepPublicJWK returns the public JWK of a P-256 key for an ES256 provisioner
// and its RFC 7638 thumbprint, used as its kid.
func stepPublicJWK(pub *ecdsa.PublicKey) (map[string]string, string, error) {
	pt, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, "", err
	}
	if pub.Curve != elliptic.P256() || len(pt) != 65 {
		return nil, "", errors.New("provisioner key is not P-256")
	}
	b64 := base64.RawURLEncoding
	x, y := b64.EncodeToString(pt[1:33]), b64.EncodeToString(pt[33:])
	// RFC 7638: the required members in lexicographic order, no whitespace.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	kid := b64.EncodeToString(sum[:])
	return map[string]string{"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": x, "y": y}, kid, nil
}

// stepMustCA returns a CA key and certificate on curve, self-signed when parent
// is nil. A root may have one CA below it, an intermediate none.
func stepMustCA(t testing.TB, cn string, curve elliptic.Curve, parent *x509.Certificate, parentKey crypto.Signer) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatalf("CA key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("CA serial: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("CA certificate %s: %v", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("CA certificate %s: %v", cn, err)
	}
	return key, cert
}

func stepPEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func stepParseCert(s string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// stepTail returns the last lines of the file at path, for failure messages.
func stepTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// TestStepCAPeer signs 200 P-256 and 200 P-384 requests on step-ca with 32
// workers each.
func TestStepCAPeer(t *testing.T) {
	s := startStepCA(t, stepCABinary(t), t.TempDir())
	t.Log(s.Conditions())
	const n, workers = 200, 32
	for _, kt := range []string{"p256", "p384"} {
		f := s.SignOp(t, kt, n)
		r, err := drive(t.Context(), n, workers, f)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if r.N != n {
			t.Fatalf("%s: %d of %d operations", kt, r.N, n)
		}
		t.Logf("step-ca sign %s, %d workers: %s", kt, workers, r)
	}
}
