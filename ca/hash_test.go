package ca

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestHash(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	h := Hash(p.root.Cert)
	sum := sha256.Sum256(p.root.Cert.RawSubjectPublicKeyInfo)
	if h != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("Hash = %s", h)
	}
	if err := MatchHash(p.root.Cert, h); err != nil {
		t.Errorf("MatchHash own hash: %v", err)
	}
	if err := MatchHash(p.root.Cert, strings.ToUpper(h[:7])+h[7:]); !errors.Is(err, ErrHashFormat) {
		t.Errorf("upper-case prefix: %v", err)
	}
	if err := MatchHash(p.root.Cert, h[:7]+strings.ToUpper(h[7:])); err != nil {
		t.Errorf("upper-case hex refused: %v", err)
	}
	other := newPKI(t, testNetwork, testNow)
	err := MatchHash(other.root.Cert, h)
	var me *HashMismatchError
	if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &me) || me.Want != h || me.Got[0] != Hash(other.root.Cert) {
		t.Fatalf("MatchHash of another root: %v", err)
	}
	if !strings.Contains(err.Error(), "--ca-hash") {
		t.Errorf("mismatch error says nothing to do: %v", err)
	}
	if err := MatchHash(nil, h); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("nil certificate: %v", err)
	}
	// The hash pins the key: a certificate re-issued for the same key matches.
	again := forge(t, rootTemplate(testNetwork, testNow), p.root, p.root.Key.Public())
	if err := MatchHash(again, h); err != nil {
		t.Errorf("same key, new certificate: %v", err)
	}
}

func TestParseHash(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	if b, err := ParseHash(good); err != nil || len(b) != 32 || b[0] != 0xab {
		t.Fatalf("ParseHash(%s) = %x, %v", good, b, err)
	}
	bad := []struct{ in, msg string }{
		{"", "must start with"},
		{"sha256:", "0 hex digits"},
		{strings.Repeat("ab", 32), "must start with"},
		{"sha1:" + strings.Repeat("ab", 20), "must start with"},
		{"SHA256:" + strings.Repeat("ab", 32), "must start with"},
		{"sha256:" + strings.Repeat("ab", 31), "62 hex digits"},
		{"sha256:" + strings.Repeat("ab", 33), "66 hex digits"},
		{"sha256:" + strings.Repeat("zz", 32), "not hexadecimal"},
		{" sha256:" + strings.Repeat("ab", 32), "must start with"},
		{"sha256:" + strings.Repeat("ab", 32) + "\n", "65 hex digits"},
		{strings.Repeat("x", 5000), "must start with"},
	}
	for _, tc := range bad {
		_, err := ParseHash(tc.in)
		if !errors.Is(err, ErrHashFormat) {
			t.Errorf("ParseHash(%.20q) = %v", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "keymesh root bootstrap") {
			t.Errorf("ParseHash(%.20q): error %q", tc.in, err)
		}
		if len(err.Error()) > 300 {
			t.Errorf("error echoes %d bytes of input", len(err.Error()))
		}
	}
}

func raw(certs ...*x509.Certificate) [][]byte {
	var r [][]byte
	for _, c := range certs {
		r = append(r, c.Raw)
	}
	return r
}

func TestVerifyPinned(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	key := mustKey(t, KeyP256)
	srv, err := SignServerTLS(p.issuer, key.Public(), testNetwork, "r1", []string{"127.0.0.1", "r1.example.net"}, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	pin := Hash(p.root.Cert)
	for _, name := range []string{"127.0.0.1", "r1.example.net", "127.0.0.1:8200", "R1.Example.NET"} {
		root, err := VerifyPinned(raw(srv, p.issuer.Cert, p.root.Cert), pin, name, testNow)
		if err != nil || !root.Equal(p.root.Cert) {
			t.Errorf("VerifyPinned(%s) = %v", name, err)
		}
	}
	// The order after the leaf does not matter.
	if _, err := VerifyPinned(raw(srv, p.root.Cert, p.issuer.Cert), pin, "127.0.0.1", testNow); err != nil {
		t.Errorf("root before intermediate: %v", err)
	}

	other := newPKI(t, testNetwork, testNow)
	otherSrv, err := SignServerTLS(other.issuer, key.Public(), testNetwork, "r1", []string{"127.0.0.1"}, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := SignAdmin(p.issuer, key.Public(), testNetwork, "ops", 0, testNow, nil)
	// A node certificate valid for the address dialled (a node that got a
	// DNS or IP name it should not hold): a valid chain, serverAuth, the
	// right name, but not a root server.
	node, err := SignNode(p.issuer, NodeRequest{PublicKey: key.Public(), Network: testNetwork, NodeID: "n1",
		DNSNames: []string{"r1.example.net"}, Now: testNow}, nil)
	if err != nil {
		t.Fatal(err)
	}
	garbled := raw(srv, p.issuer.Cert, p.root.Cert)
	garbled[1] = []byte{0x30, 0x00}
	cases := []struct {
		name     string
		raw      [][]byte
		pin      string
		server   string
		now      time.Time
		is       error
		mismatch bool
	}{
		{"wrong pin", raw(srv, p.issuer.Cert, p.root.Cert), Hash(other.root.Cert), "127.0.0.1", testNow, ErrHashMismatch, true},
		{"other CA's chain", raw(otherSrv, other.issuer.Cert, other.root.Cert), pin, "127.0.0.1", testNow, ErrHashMismatch, true},
		{"other CA's leaf with our root", raw(otherSrv, other.issuer.Cert, p.root.Cert), pin, "127.0.0.1", testNow, ErrChain, false},
		{"other leaf, our intermediate and root", raw(otherSrv, p.issuer.Cert, p.root.Cert), pin, "127.0.0.1", testNow, ErrChain, false},
		{"root not sent", raw(srv, p.issuer.Cert), pin, "127.0.0.1", testNow, ErrHashMismatch, true},
		{"intermediate not sent", raw(srv, p.root.Cert), pin, "127.0.0.1", testNow, ErrChain, false},
		{"root as leaf", raw(p.root.Cert), pin, "127.0.0.1", testNow, ErrHashMismatch, true},
		{"wrong server name", raw(srv, p.issuer.Cert, p.root.Cert), pin, "r2.example.net", testNow, ErrChain, false},
		{"wrong address", raw(srv, p.issuer.Cert, p.root.Cert), pin, "127.0.0.2", testNow, ErrChain, false},
		{"no server name", raw(srv, p.issuer.Cert, p.root.Cert), pin, "", testNow, ErrChain, false},
		{"client-only certificate", raw(admin, p.issuer.Cert, p.root.Cert), pin, "127.0.0.1", testNow, ErrChain, false},
		{"a node's certificate", raw(node, p.issuer.Cert, p.root.Cert), pin, "r1.example.net", testNow, ErrNotRootServer, false},
		{"expired", raw(srv, p.issuer.Cert, p.root.Cert), pin, "127.0.0.1", srv.NotAfter.Add(time.Minute), ErrChain, false},
		{"malformed pin", raw(srv, p.issuer.Cert, p.root.Cert), "sha256:xyz", "127.0.0.1", testNow, ErrHashFormat, false},
		{"nothing presented", nil, pin, "127.0.0.1", testNow, ErrChain, false},
		{"garbled certificate", garbled, pin, "127.0.0.1", testNow, ErrChain, false},
		{"too many certificates", raw(srv, p.issuer.Cert, p.issuer.Cert, p.issuer.Cert, p.issuer.Cert, p.issuer.Cert, p.issuer.Cert, p.issuer.Cert, p.root.Cert), pin, "127.0.0.1", testNow, ErrChain, false},
		{"no time", raw(srv, p.issuer.Cert, p.root.Cert), pin, "127.0.0.1", time.Time{}, ErrNoTime, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root, err := VerifyPinned(tc.raw, tc.pin, tc.server, tc.now)
			if root != nil || !errors.Is(err, tc.is) {
				t.Fatalf("VerifyPinned = %v, %v; want %v", root, err, tc.is)
			}
			var me *HashMismatchError
			if tc.mismatch != errors.As(err, &me) {
				t.Errorf("error %v: HashMismatchError %v, want %v", err, !tc.mismatch, tc.mismatch)
			}
		})
	}
}

// TestPinnedTLS runs TLS 1.3 handshakes the way a joining root server
// makes first contact: PinnedTLSConfig, nothing trusted but the pin.
func TestPinnedTLS(t *testing.T) {
	now := time.Now()
	p := newPKI(t, testNetwork, now)
	other := newPKI(t, testNetwork, now)
	key := mustKey(t, KeyP256)
	srv, err := SignServerTLS(p.issuer, key.Public(), testNetwork, "r1", []string{"127.0.0.1"}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	serverConf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: raw(srv, p.issuer.Cert, p.root.Cert), PrivateKey: key, Leaf: srv}},
	}
	handshake := func(conf *tls.Config) error {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		done := make(chan error, 1)
		go func() { done <- tls.Server(c2, serverConf).HandshakeContext(context.Background()) }()
		err := tls.Client(c1, conf).HandshakeContext(context.Background())
		c1.Close()
		<-done
		return err
	}
	clock := func() time.Time { return now }
	conf, err := PinnedTLSConfig(pin(p), "127.0.0.1", clock)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(conf); err != nil {
		t.Fatalf("pinned handshake: %v", err)
	}
	conf, _ = PinnedTLSConfig(pin(other), "127.0.0.1", clock)
	if err := handshake(conf); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("handshake with another network's pin: %v", err)
	}
	conf, _ = PinnedTLSConfig(pin(p), "127.0.0.9", clock)
	if err := handshake(conf); !errors.Is(err, ErrChain) {
		t.Fatalf("handshake with the wrong address: %v", err)
	}
	// After first contact the root is known: plain verification works with
	// the same server chain.
	roots := x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	if err := handshake(&tls.Config{MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", RootCAs: roots, Time: clock}); err != nil {
		t.Fatalf("handshake with the root known: %v", err)
	}
	if _, err := PinnedTLSConfig("sha256:00", "127.0.0.1", nil); !errors.Is(err, ErrHashFormat) {
		t.Errorf("malformed pin: %v", err)
	}
	if _, err := PinnedTLSConfig(pin(p), "", nil); !errors.Is(err, ErrChain) {
		t.Errorf("no server name: %v", err)
	}
}

func pin(p *pki) string { return Hash(p.root.Cert) }
