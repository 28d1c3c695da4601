package identity

import (
	"context"
	"errors"
	"testing"
)

// FuzzVerify feeds arbitrary tokens to the parser and the full verifier:
// never a panic, every refusal a *VerifyError with a reason, and nothing but
// the one genuine token is ever accepted.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, "P-384", func(c *VerifierConfig) { c.CacheSize = 64 })
	good := fx.node.mint(f, MintRequest{})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("e30.e30.")
	f.Add(fx.node.mint(f, MintRequest{BindCert: fx.node.cert}))
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := ParseUnverified(tok, 0); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrClaims) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("ParseUnverified: unexpected error %v", err)
		}
		vd, err := fx.v.Verify(context.Background(), VerifyRequest{Token: tok, PeerCert: fx.node.cert})
		if err == nil {
			if tok != good && vd.Claims.CertThumbprint == "" {
				t.Fatalf("accepted a token that was never minted: %q", tok)
			}
			return
		}
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Reason == "" || ve.Reason == "refused" {
			t.Fatalf("refusal without a reason: %v", err)
		}
	})
}

// FuzzDecodeJWKS: the strict JWKS decoder never panics, and whatever it
// accepts re-encodes and decodes to the same keys.
func FuzzDecodeJWKS(f *testing.F) {
	clk := newClock(t0)
	p := newPKI(f, "mainnet.example.net", t0)
	doc, err := NewKeySet(p.newNode(f, clk, "a", "P-384").key, p.newNode(f, clk, "b", "Ed25519").key).JWKS()
	if err != nil {
		f.Fatal(err)
	}
	body, err := doc.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","alg":"EdDSA"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeJWKS(data, Limits{})
		if err != nil {
			if !errors.Is(err, ErrInvalidJWK) {
				t.Fatalf("error does not wrap ErrInvalidJWK: %v", err)
			}
			return
		}
		again, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodeJWKS(again, Limits{})
		if err != nil || len(s2.Keys) != len(s.Keys) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// FuzzParseSPIFFEID: accepted IDs print back to the same text.
func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{"spiffe://mainnet.example.net/node/r1", "spiffe://a/admin/b", "spiffe://a/node/..", "spiffe://1/node/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSPIFFEID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSPIFFEID) {
				t.Fatal(err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("%q parsed to %q", s, id)
		}
	})
}
