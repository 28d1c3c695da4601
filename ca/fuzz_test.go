package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func FuzzCheckCSR(f *testing.F) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		der, err := NewCSR(mustKey(f, kt), Identity{testNetwork, KindNode, "n1"}, []string{"n1.example.net"}, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
		f.Add(der[:len(der)/2])
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	f.Add(csrFor(f, p224))
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Add([]byte("garbage"))
	p := newPKI(f, testNetwork, testNow)
	f.Add(p.root.Cert.Raw)
	f.Fuzz(func(t *testing.T, der []byte) {
		in := bytes.Clone(der)
		csr, err := CheckCSR(der)
		if !bytes.Equal(in, der) {
			t.Fatalf("CheckCSR changed its input")
		}
		if err != nil {
			if csr != nil || !errors.Is(err, ErrCSR) {
				t.Fatalf("error %v with csr %v, or not ErrCSR", err, csr)
			}
			return
		}
		if len(der) > MaxCSRSize {
			t.Fatalf("accepted %d bytes", len(der))
		}
		if _, err := KeyTypeOf(csr.PublicKey); err != nil {
			t.Fatalf("accepted key %s", describeKey(csr.PublicKey))
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a bad signature: %v", err)
		}
		// Whatever the request says, the certificate says only what the
		// registration says.
		c, err := SignNode(p.issuer, NodeRequest{PublicKey: csr.PublicKey, Network: testNetwork, NodeID: "fuzz", Now: testNow}, nil)
		if err != nil {
			t.Fatalf("SignNode of an accepted request: %v", err)
		}
		if id, err := IdentityOf(c); err != nil || id.Name != "fuzz" || len(c.DNSNames) != 0 {
			t.Fatalf("identity %v %v DNS %v", id, err, c.DNSNames)
		}
	})
}

func FuzzParseCertsPEM(f *testing.F) {
	p := newPKI(f, testNetwork, testNow)
	node, _ := p.node(f, "n1", testNow)
	bundle := EncodeCertsPEM(node, p.issuer.Cert, p.root.Cert)
	f.Add(bundle)
	f.Add(EncodeCertsPEM(p.root.Cert))
	f.Add(bundle[:len(bundle)/2])
	f.Add(append([]byte("junk\n"), bundle...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n" + strings.Repeat("-----BEGIN CERTIFICATE-----\n", 3)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertsPEM(b)
		if err != nil {
			if certs != nil || (!errors.Is(err, ErrPEM) && !errors.Is(err, ErrTooLarge)) {
				t.Fatalf("error %v, %d certs", err, len(certs))
			}
			return
		}
		if len(certs) == 0 || len(certs) > MaxBundleLen {
			t.Fatalf("%d certificates", len(certs))
		}
		again, err := ParseCertsPEM(EncodeCertsPEM(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoding does not parse: %v", err)
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed", i)
			}
		}
	})
}

func FuzzParseHash(f *testing.F) {
	p := newPKI(f, testNetwork, testNow)
	f.Add(Hash(p.root.Cert))
	f.Add(strings.ToUpper(Hash(p.root.Cert)))
	f.Add("sha256:" + strings.Repeat("A", 64))
	f.Add("sha256:")
	f.Add("sha256:xyz")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseHash(s)
		if err != nil {
			if b != nil || !errors.Is(err, ErrHashFormat) {
				t.Fatalf("ParseHash(%q) = %x, %v", s, b, err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if len(b) != 32 || !strings.EqualFold(s, "sha256:"+hex.EncodeToString(b)) || !strings.HasPrefix(s, "sha256:") {
			t.Fatalf("ParseHash(%q) = %x", s, b)
		}
		// MatchHash agrees with ParseHash.
		err = MatchHash(p.root.Cert, s)
		if match := strings.EqualFold(s, Hash(p.root.Cert)); match != (err == nil) {
			t.Fatalf("MatchHash(%q) = %v", s, err)
		}
	})
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"spiffe://mainnet.example.net/node/n1", "spiffe://a/root/r", "spiffe://a/node/..", "spiffe://A/node/x", "spiffe://a:1/node/x", "spiffe://a/node/x%20"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		if id.String() != s || id.Validate() != nil {
			t.Fatalf("ParseIdentity(%q) = %v", s, id)
		}
		again, err := ParseIdentity(id.URI().String())
		if err != nil || again != id {
			t.Fatalf("URI round trip of %q: %v", s, err)
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		b, _ := MarshalKeyPEM(mustKey(f, kt))
		f.Add(b)
	}
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeyPEM(b)
		if err != nil {
			if k != nil {
				t.Fatalf("key and error")
			}
			return
		}
		again, err := MarshalKeyPEM(k)
		if err != nil {
			t.Fatalf("parsed key does not marshal: %v", err)
		}
		k2, err := ParseKeyPEM(again)
		if err != nil || !publicKeysEqual(k.Public(), k2.Public()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{7}, SealKeySize)
	aad := []byte(testNetwork)
	// A fixed nonce, so every fuzzing process seals the same bytes.
	sealed, err := Seal(key, []byte("root key"), aad, bytes.NewReader(make([]byte, sealNonceLen)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(sealed[:sealOverhead])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := Open(key, b, aad)
		if err != nil {
			if pt != nil || (!errors.Is(err, ErrSealed) && !errors.Is(err, ErrTooLarge)) {
				t.Fatalf("Open: %v", err)
			}
			return
		}
		if !bytes.Equal(b, sealed) || string(pt) != "root key" {
			t.Fatalf("Open accepted data that was never sealed: %x", b)
		}
	})
}
