package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"testing"

	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/benchlimit"
)

// BenchmarkDecide: one Cedar decision (NODE peer.connect under the default
// policies plus a context-dependent forbid), beside the raw P-384
// ecdsa.VerifyASN1 that precedes it on every uncached request. ratio is how
// many decisions fit in one raw verification.
func BenchmarkDecide(b *testing.B) {
	ps, err := ParsePolicies(DefaultText() + `
@id("peering-needs-binding")
forbid (principal, action == Action::"peer.connect", resource) unless { context.bound };`)
	if err != nil {
		b.Fatal(err)
	}
	a := NewAuthorizer(ps)
	ctx := Context{Subject: "spiffe://mainnet.example.net/node/r1", Node: "r1", Network: "mainnet.example.net", Bound: true}

	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha512.Sum384([]byte("keymesh"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	benchlimit.Versus(b, "rawverify", 100, func() {
		d, err := a.Decide(identity.PrincipalNode, PeerConnect, ctx)
		if err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}, func() {
		if !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
			b.Fatal("raw verify")
		}
	})
}
