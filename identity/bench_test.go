package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"testing"
	"time"

	"github.com/keymesh/keymesh/test/benchlimit"
)

// rawP384 returns raw ecdsa.VerifyASN1 and ecdsa.SignASN1 on P-384 over a
// SHA-384 digest: the physical limits of verification and minting.
func rawP384(b *testing.B) (verify, sign func()) {
	k := mustKey(b, elliptic.P384())
	digest := sha512.Sum384([]byte("keymesh"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	verify = func() {
		if !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
			b.Fatal("raw verify failed")
		}
	}
	sign = func() {
		if _, err := ecdsa.SignASN1(rand.Reader, k, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	return verify, sign
}

func benchFixture(b *testing.B, cacheSize int) (*fixture, string) {
	f := newFixture(b, "P-384", func(c *VerifierConfig) { c.CacheSize = cacheSize })
	tok := f.node.mint(b, MintRequest{TTL: time.Hour})
	if _, err := f.verify(tok); err != nil {
		b.Fatal(err)
	}
	return f, tok
}

// BenchmarkVerifyCold: full verification with the token cache disabled (the
// key's chain verification stays cached, as it is per kid), against raw
// ecdsa.VerifyASN1 on P-384. Aim: ratio >= 0.85.
func BenchmarkVerifyCold(b *testing.B) {
	f, tok := benchFixture(b, -1)
	raw, _ := rawP384(b)
	ctx := context.Background()
	benchlimit.Versus(b, "rawverify", 1, func() {
		if _, err := f.v.Verify(ctx, VerifyRequest{Token: tok}); err != nil {
			b.Fatal(err)
		}
	}, raw)
}

// BenchmarkVerifyWarm: a token served from the cache of verified tokens
// (revocations re-checked), against raw ecdsa.VerifyASN1. Aim: ratio >= 50.
func BenchmarkVerifyWarm(b *testing.B) {
	f, tok := benchFixture(b, 0)
	raw, _ := rawP384(b)
	ctx := context.Background()
	benchlimit.Versus(b, "rawverify", 1000, func() {
		if _, err := f.v.Verify(ctx, VerifyRequest{Token: tok}); err != nil {
			b.Fatal(err)
		}
	}, raw)
}

// BenchmarkVerifyChain: verification when the chain cache is also cold (after
// every Invalidate): the x509 chain check costs about two more verifications.
// Informative; the ratio is expected near 1/3.
func BenchmarkVerifyChain(b *testing.B) {
	f, tok := benchFixture(b, -1)
	raw, _ := rawP384(b)
	ctx := context.Background()
	benchlimit.Versus(b, "rawverify", 1, func() {
		f.v.Invalidate()
		if _, err := f.v.Verify(ctx, VerifyRequest{Token: tok}); err != nil {
			b.Fatal(err)
		}
	}, raw)
}

// BenchmarkMint: minting an ES384 token, against raw ecdsa.SignASN1 on P-384.
// Aim: ratio >= 0.85.
func BenchmarkMint(b *testing.B) {
	clk := newClock(t0)
	n := newPKI(b, "mainnet.example.net", t0).newNode(b, clk, "r1", "P-384")
	_, raw := rawP384(b)
	req := MintRequest{Audience: []string{"peer.example"}, Principal: PrincipalNode, BindCert: n.cert}
	benchlimit.Versus(b, "rawsign", 1, func() {
		if _, _, err := n.minter.Mint(req); err != nil {
			b.Fatal(err)
		}
	}, raw)
}
