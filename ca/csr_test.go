package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"sync"
	"testing"
)

// csrFor makes a DER CSR for key with crypto/x509.
func csrFor(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-x"}}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

// assembleCSR builds a CSR from its parts, to make requests crypto/x509
// would refuse to make.
func assembleCSR(t testing.TB, tbs []byte, alg asn1.ObjectIdentifier, sig []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: alg}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	rsaOnce          sync.Once
	rsa1024, rsa2048 *rsa.PrivateKey
)

func rsaKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	rsaOnce.Do(func() {
		var err error
		if rsa1024, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			t.Fatalf("RSA-1024: %v", err)
		}
		if rsa2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatalf("RSA-2048: %v", err)
		}
	})
	return rsa1024, rsa2048
}

func TestCheckCSRAccepts(t *testing.T) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		key := mustKey(t, kt)
		der, err := NewCSR(key, Identity{testNetwork, KindNode, "n1"}, []string{"n1.example.net"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := CheckCSR(der)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if !publicKeysEqual(key.Public(), csr.PublicKey) {
			t.Errorf("%s: wrong key", kt)
		}
		// PEM round trip.
		back, err := DecodeCSRPEM(EncodeCSRPEM(der))
		if err != nil || !bytes.Equal(back, der) {
			t.Errorf("PEM round trip: %v", err)
		}
	}
	// ECDSA with SHA-512 is fine too.
	k := mustKey(t, KeyP256)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{SignatureAlgorithm: x509.ECDSAWithSHA512}, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckCSR(der); err != nil {
		t.Errorf("ECDSA-SHA512: %v", err)
	}
}

func TestCheckCSRRejects(t *testing.T) {
	r1024, r2048 := rsaKeys(t)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p256 := mustKey(t, KeyP256).(*ecdsa.PrivateKey)
	ed := mustKey(t, KeyEd25519)
	valid := csrFor(t, p256)
	parsed, _ := x509.ParseCertificateRequest(valid)

	// The subject changed after signing.
	tampered := bytes.Clone(valid)
	i := bytes.Index(tampered, []byte("node-x"))
	tampered[i] = 'm'
	edTampered := csrFor(t, ed)
	i = bytes.Index(edTampered, []byte("node-x"))
	edTampered[i] = 'm'
	// Valid structure, signature made by another key.
	otherSig, _ := ecdsa.SignASN1(rand.Reader, mustKey(t, KeyP256).(*ecdsa.PrivateKey), sha256sum(parsed.RawTBSCertificateRequest))
	wrongKey := assembleCSR(t, parsed.RawTBSCertificateRequest, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, otherSig)
	// ECDSA with SHA-1.
	h := sha1.Sum(parsed.RawTBSCertificateRequest)
	sha1Sig, _ := ecdsa.SignASN1(rand.Reader, p256, h[:])
	sha1CSR := assembleCSR(t, parsed.RawTBSCertificateRequest, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}, sha1Sig)
	// Signature bits flipped.
	flipped := bytes.Clone(valid)
	flipped[len(flipped)-5] ^= 0x01

	p := newPKI(t, testNetwork, testNow)
	cert, _ := p.node(t, "n", testNow)

	cases := []struct {
		name string
		der  []byte
		is   error
		msg  string
	}{
		{"empty", nil, ErrCSR, "empty request"},
		{"garbage", []byte("hello, certificate authority"), ErrCSR, "not a DER-encoded PKCS#10"},
		{"oversized", make([]byte, MaxCSRSize+1), ErrTooLarge, "at most 8192"},
		{"truncated", valid[:len(valid)-10], ErrCSR, "not a DER-encoded"},
		{"trailing data", append(bytes.Clone(valid), 0), ErrCSR, "not a DER-encoded"},
		{"a certificate", cert.Raw, ErrCSR, "not a DER-encoded"},
		{"PEM instead of DER", EncodeCSRPEM(valid), ErrCSR, "not a DER-encoded"},
		{"tampered subject", tampered, ErrCSR, "signature does not verify"},
		{"tampered Ed25519", edTampered, ErrCSR, "signature does not verify"},
		{"signed by another key", wrongKey, ErrCSR, "signature does not verify"},
		{"flipped signature", flipped, ErrCSR, "signature"},
		{"ECDSA with SHA-1", sha1CSR, ErrCSR, "signature algorithm ECDSA-SHA1 not allowed"},
		{"RSA-1024", csrFor(t, r1024), ErrKeyType, "RSA-1024"},
		{"RSA-2048", csrFor(t, r2048), ErrKeyType, "RSA-2048"},
		{"P-224", csrFor(t, p224), ErrKeyType, "P-224"},
		{"P-521", csrFor(t, p521), ErrKeyType, "P-521"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := CheckCSR(tc.der)
			if csr != nil || err == nil {
				t.Fatalf("accepted")
			}
			if !errors.Is(err, ErrCSR) || !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want ErrCSR and %v", err, tc.is)
			}
			var ce *CSRError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *CSRError", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
	// PEM decoding refuses what is not one CSR block.
	for _, b := range [][]byte{nil, []byte("x"), EncodeCertsPEM(cert), append(EncodeCSRPEM(valid), EncodeCSRPEM(valid)...), make([]byte, 5*MaxCSRSize)} {
		if _, err := DecodeCSRPEM(b); !errors.Is(err, ErrCSR) {
			t.Errorf("DecodeCSRPEM(%.20q) = %v", b, err)
		}
	}
	// NewCSR refuses bad keys and names.
	if _, err := NewCSR(p224, Identity{testNetwork, KindNode, "n"}, nil, nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("NewCSR P-224: %v", err)
	}
	if _, err := NewCSR(p256, Identity{testNetwork, KindNode, "a b"}, nil, nil); !errors.Is(err, ErrName) {
		t.Errorf("NewCSR bad name: %v", err)
	}
}
