package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"
)

// t0 is the fixed start of test time (certificates are issued around it).
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testPKI is one network's AS root and one issuing intermediate.
type testPKI struct {
	network   string
	rootKey   *ecdsa.PrivateKey
	root      *x509.Certificate
	interKey  *ecdsa.PrivateKey
	inter     *x509.Certificate
	serialCtr int64
}

func newPKI(t testing.TB, network string, now time.Time) *testPKI {
	t.Helper()
	p := &testPKI{network: network, serialCtr: 100}
	p.rootKey = mustKey(t, elliptic.P384())
	p.root = p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: network + " root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
	}, nil, &p.rootKey.PublicKey, p.rootKey)
	p.interKey = mustKey(t, elliptic.P384())
	p.inter = p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: network + " issuer"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
	}, p.root, &p.interKey.PublicKey, p.rootKey)
	return p
}

func (p *testPKI) sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	p.serialCtr++
	tmpl.SerialNumber = big.NewInt(p.serialCtr<<20 + 0xabc)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// issue makes a leaf for pub with URI SAN spiffe://<network>/<kind>/<name>.
func (p *testPKI) issue(t testing.TB, pub crypto.PublicKey, kind, name string, nb, na time.Time) *x509.Certificate {
	t.Helper()
	u, err := url.Parse("spiffe://" + p.network + "/" + kind + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		NotBefore:   nb, NotAfter: na,
	}, p.inter, pub, p.interKey)
}

func (p *testPKI) anchors(accepted ...string) TrustAnchors {
	if accepted == nil {
		accepted = []string{p.network}
	}
	return TrustAnchors{Roots: map[string][]*x509.Certificate{p.network: {p.root}}, Accepted: accepted}
}

func mustKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newSigner makes a key of the named type: "P-384", "P-256" or "Ed25519".
func newSigner(t testing.TB, typ string) crypto.Signer {
	t.Helper()
	switch typ {
	case "P-256":
		return mustKey(t, elliptic.P256())
	case "P-384":
		return mustKey(t, elliptic.P384())
	case "Ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	t.Fatalf("unknown key type %s", typ)
	return nil
}

// testNode is a node with a key, a 24 h certificate and a minter.
type testNode struct {
	name   string
	signer crypto.Signer
	cert   *x509.Certificate
	minter *Minter
	key    Key // as published in the JWKS
}

func (p *testPKI) newNode(t testing.TB, clk *clock, name, keyType string) *testNode {
	t.Helper()
	now := clk.Now()
	s := newSigner(t, keyType)
	cert := p.issue(t, s.Public(), KindNode, name, now.Add(-time.Minute), now.Add(24*time.Hour))
	m, err := NewMinter(MinterConfig{Key: s, Cert: cert, Chain: []*x509.Certificate{p.inter}, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	k, err := KeyFromJWK(m.JWK())
	if err != nil {
		t.Fatal(err)
	}
	k.Node, k.State, k.NotAfter = name, KeyActive, cert.NotAfter
	k.Principals = []Principal{PrincipalNode, PrincipalUser}
	return &testNode{name: name, signer: s, cert: cert, minter: m, key: k}
}

func (n *testNode) mint(t testing.TB, req MintRequest) string {
	t.Helper()
	if req.Audience == nil {
		req.Audience = []string{"peer.example"}
	}
	if req.Principal == "" {
		req.Principal = PrincipalNode
	}
	tok, _, err := n.minter.Mint(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fixture is one network, one node, a verifier over an in-memory trust state.
type fixture struct {
	clk  *clock
	pki  *testPKI
	node *testNode
	keys *refreshingKeys
	revs *RevocationSet
	v    *Verifier
}

func newFixture(t testing.TB, keyType string, mod func(*VerifierConfig)) *fixture {
	t.Helper()
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", keyType)
	f := &fixture{clk: clk, pki: p, node: n, keys: &refreshingKeys{KeySet: NewKeySet(n.key)}, revs: NewRevocationSet()}
	cfg := VerifierConfig{Keys: f.keys, Revocations: f.revs, Anchors: p.anchors(), Audience: []string{"peer.example"}, Clock: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

func (f *fixture) verify(tok string) (Verified, error) {
	return f.v.Verify(context.Background(), VerifyRequest{Token: tok})
}

// refreshingKeys is a KeySet that is also a Refresher: Refresh moves the
// pending keys in and counts calls.
type refreshingKeys struct {
	*KeySet
	mu      sync.Mutex
	pending []Key
	calls   int
	fail    error
}

func (r *refreshingKeys) Refresh(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		return r.fail
	}
	for _, k := range r.pending {
		r.Put(k)
	}
	r.pending = nil
	return nil
}

func (r *refreshingKeys) refreshCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// craft builds a compact JWS from raw header and payload JSON, signed with
// signer under alg (any hash the signer accepts), for tokens the Minter
// would never make.
func craft(t testing.TB, signer crypto.Signer, alg, header, payload string) string {
	t.Helper()
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	var sig []byte
	var err error
	switch alg {
	case AlgES256, AlgES384, AlgEdDSA:
		sig, err = signJWS(signer, alg, rand.Reader, []byte(input))
		if err != nil && alg == AlgES256 { // P-384 key under ES256: sign SHA-256 with it anyway
			err = nil
			sig = nil
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

func wantErr(t testing.TB, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want %v", err, sentinel)
	}
	var ve *VerifyError
	if errors.As(err, &ve) && ve.Reason != reasonOf(sentinel) {
		t.Fatalf("reason = %q, want %q", ve.Reason, reasonOf(sentinel))
	}
}
