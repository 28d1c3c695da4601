package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"testing"
	"time"
)

// BenchmarkRegistrationCrypto measures the crypto of one node registration
// on a root server — CheckCSR of a request for a P-384 node key, then
// SignNode — and, interleaved in the same loop so machine load hits both
// alike, the raw operations it is made of: the ECDSA signature with the same
// issuer key, the verification of the request's signature with the node
// key, and the verification crypto/x509 does of every certificate it signs
// (with the issuer key). ns/op covers the whole interleaved iteration; the
// metrics split it:
//
//	reg-ns             one registration (CheckCSR + SignNode)
//	raw-sign-ns        ecdsa.SignASN1 with the issuer key
//	raw-verify-ns      ecdsa.VerifyASN1 with the issuer key
//	raw-csr-verify-ns  ecdsa.VerifyASN1 of the request with the node key
//	x-raw-sign         reg-ns / raw-sign-ns
//	x-raw-crypto       reg-ns / (raw-sign + raw-verify + raw-csr-verify)
//	registrations/s    1e9 / reg-ns, one core
//
// issuer=p384 is the DESIGN's key type; issuer=p256 shows what a P-256
// issuing key would give.
func BenchmarkRegistrationCrypto(b *testing.B) {
	for _, issuerType := range []KeyType{KeyP384, KeyP256} {
		b.Run("issuer="+string(issuerType), func(b *testing.B) {
			now := time.Now()
			root, err := NewRoot(testNetwork, now, nil)
			if err != nil {
				b.Fatal(err)
			}
			issuerKey := mustKey(b, issuerType).(*ecdsa.PrivateKey)
			cert, err := SignIntermediate(root, issuerKey.Public(), testNetwork, "r1", now, nil)
			if err != nil {
				b.Fatal(err)
			}
			issuer := Signer{Cert: cert, Key: issuerKey}
			csrDER, err := NewCSR(mustKey(b, KeyP384), Identity{testNetwork, KindNode, "bench"}, []string{"bench.example.net"}, nil)
			if err != nil {
				b.Fatal(err)
			}
			var digest []byte
			if issuerType == KeyP384 {
				d := sha512.Sum384(csrDER)
				digest = d[:]
			} else {
				d := sha256.Sum256(csrDER)
				digest = d[:]
			}
			parsed, err := CheckCSR(csrDER)
			if err != nil {
				b.Fatal(err)
			}
			nodePub := parsed.PublicKey.(*ecdsa.PublicKey)
			tbsDigest := sha512.Sum384(parsed.RawTBSCertificateRequest)
			var reg, sign, verify, csrVerify time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				csr, err := CheckCSR(csrDER)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := SignNode(issuer, NodeRequest{PublicKey: csr.PublicKey, Network: testNetwork, NodeID: "bench", DNSNames: []string{"bench.example.net"}, Now: now}, nil); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				sig, err := ecdsa.SignASN1(rand.Reader, issuerKey, digest)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if !ecdsa.VerifyASN1(&issuerKey.PublicKey, digest, sig) {
					b.Fatal("raw verification failed")
				}
				t3 := time.Now()
				if !ecdsa.VerifyASN1(nodePub, tbsDigest[:], parsed.Signature) {
					b.Fatal("raw request verification failed")
				}
				t4 := time.Now()
				reg += t1.Sub(t0)
				sign += t2.Sub(t1)
				verify += t3.Sub(t2)
				csrVerify += t4.Sub(t3)
			}
			n := float64(b.N)
			regNs, signNs := float64(reg.Nanoseconds())/n, float64(sign.Nanoseconds())/n
			verifyNs, csrVerifyNs := float64(verify.Nanoseconds())/n, float64(csrVerify.Nanoseconds())/n
			b.ReportMetric(regNs, "reg-ns")
			b.ReportMetric(signNs, "raw-sign-ns")
			b.ReportMetric(verifyNs, "raw-verify-ns")
			b.ReportMetric(csrVerifyNs, "raw-csr-verify-ns")
			b.ReportMetric(regNs/signNs, "x-raw-sign")
			b.ReportMetric(regNs/(signNs+verifyNs+csrVerifyNs), "x-raw-crypto")
			b.ReportMetric(1e9/regNs, "registrations/s")
		})
	}
}

func BenchmarkCheckCSR(b *testing.B) {
	der, err := NewCSR(mustKey(b, KeyP384), Identity{testNetwork, KindNode, "bench"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CheckCSR(der); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenSigner(b *testing.B) {
	key, _ := NewSealKey(nil)
	root, err := NewRoot(testNetwork, testNow, nil)
	if err != nil {
		b.Fatal(err)
	}
	sealed, err := SealSigner(key, root.Key, testNetwork, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := OpenSigner(key, sealed, testNetwork); err != nil {
			b.Fatal(err)
		}
	}
}
