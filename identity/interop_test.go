package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// realNode is a node whose certificate is valid now (the other libraries
// read the real clock).
func realNode(t *testing.T, keyType string) (*testPKI, *testNode, []byte) {
	t.Helper()
	now := time.Now()
	p := newPKI(t, "mainnet.example.net", now)
	n := p.newNode(t, newClock(now), "r1", keyType)
	m, err := NewMinter(MinterConfig{Key: n.signer, Cert: n.cert, Chain: []*x509.Certificate{p.inter}})
	must(t, err)
	n.minter = m
	doc, err := NewKeySet(n.key).JWKS()
	must(t, err)
	body, err := doc.Encode()
	must(t, err)
	return p, n, body
}

// TestInteropJWX: a token minted here verifies with lestrrat-go/jwx reading
// our JWKS document, for every key type, and jwx computes the same kid.
func TestInteropJWX(t *testing.T) {
	for _, typ := range []string{"P-384", "P-256", "Ed25519"} {
		t.Run(typ, func(t *testing.T) {
			_, n, body := realNode(t, typ)
			set, err := jwk.Parse(body)
			must(t, err)
			k, ok := set.Key(0)
			if !ok {
				t.Fatal("no key")
			}
			tp, err := k.Thumbprint(crypto.SHA256)
			must(t, err)
			if got := base64.RawURLEncoding.EncodeToString(tp); got != n.key.KID {
				t.Fatalf("jwx thumbprint %s, our kid %s", got, n.key.KID)
			}
			tok, claims, err := n.minter.Mint(MintRequest{Audience: []string{"peer.example"}, Principal: PrincipalNode, BindCert: n.cert})
			must(t, err)
			parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true),
				jwt.WithAudience("peer.example"), jwt.WithIssuer(claims.Issuer), jwt.WithSubject(claims.Subject))
			must(t, err)
			if parsed.JwtID() != claims.ID {
				t.Fatalf("jti %s != %s", parsed.JwtID(), claims.ID)
			}
			if p, _ := parsed.Get("principal"); p != "NODE" {
				t.Fatalf("principal = %v", p)
			}
			cnf, _ := parsed.Get("cnf")
			if m, _ := cnf.(map[string]any); m["x5t#S256"] != CertThumbprint(n.cert) {
				t.Fatalf("cnf = %v", cnf)
			}
			// A tampered token fails in jwx too.
			// Change one character well inside the signature (the last ones
			// may carry only padding bits), always to a different one.
			i := len(tok) - 10
			c := byte('A')
			if tok[i] == 'A' {
				c = 'B'
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			if _, err := jwt.Parse([]byte(bad), jwt.WithKeySet(set)); err == nil {
				t.Fatal("jwx accepted a tampered token")
			}
		})
	}
}

// TestInteropJWXSigned: tokens signed by jwx with a keymesh-shaped key verify
// with our Verifier (the r||s encoding agrees in both directions).
func TestInteropJWXSigned(t *testing.T) {
	for _, tc := range []struct {
		typ string
		alg jwa.SignatureAlgorithm
	}{{"P-384", jwa.ES384}, {"P-256", jwa.ES256}, {"Ed25519", jwa.EdDSA}} {
		t.Run(tc.typ, func(t *testing.T) {
			p, n, _ := realNode(t, tc.typ)
			now := time.Now().Truncate(time.Second)
			tok := jwt.New()
			for k, v := range map[string]any{
				jwt.IssuerKey: n.minter.ID().String(), jwt.SubjectKey: n.minter.ID().String(),
				jwt.AudienceKey: []string{"peer.example"}, jwt.IssuedAtKey: now, jwt.NotBeforeKey: now,
				jwt.ExpirationKey: now.Add(time.Minute), jwt.JwtIDKey: "jwx-1", "principal": "NODE",
			} {
				must(t, tok.Set(k, v))
			}
			hdr := jws.NewHeaders()
			must(t, hdr.Set(jws.KeyIDKey, n.key.KID))
			signed, err := jwt.Sign(tok, jwt.WithKey(tc.alg, n.signer, jws.WithProtectedHeaders(hdr)))
			must(t, err)
			v, err := NewVerifier(VerifierConfig{Keys: NewKeySet(n.key), Revocations: NewRevocationSet(), Anchors: p.anchors(), Audience: []string{"peer.example"}})
			must(t, err)
			vd, err := v.Verify(context.Background(), VerifyRequest{Token: string(signed)})
			must(t, err)
			if vd.Claims.ID != "jwx-1" {
				t.Fatalf("claims = %+v", vd.Claims)
			}
		})
	}
}

// TestInteropGoSPIFFE: a token minted here is a valid JWT-SVID for go-spiffe,
// with a bundle built from our JWKS document. (go-spiffe accepts no EdDSA.)
func TestInteropGoSPIFFE(t *testing.T) {
	for _, typ := range []string{"P-384", "P-256"} {
		t.Run(typ, func(t *testing.T) {
			_, n, body := realNode(t, typ)
			td, err := spiffeid.TrustDomainFromString("mainnet.example.net")
			must(t, err)
			bundle, err := jwtbundle.Parse(td, body)
			must(t, err)
			if _, ok := bundle.FindJWTAuthority(n.key.KID); !ok {
				t.Fatal("kid not in the go-spiffe bundle")
			}
			tok, claims, err := n.minter.Mint(MintRequest{Audience: []string{"peer.example", "other"}, Principal: PrincipalNode})
			must(t, err)
			svid, err := jwtsvid.ParseAndValidate(tok, bundle, []string{"peer.example"})
			must(t, err)
			if svid.ID.String() != claims.Subject || svid.Claims["principal"] != "NODE" {
				t.Fatalf("svid = %+v", svid)
			}
			if _, err := jwtsvid.ParseAndValidate(tok, bundle, []string{"nobody"}); err == nil {
				t.Fatal("go-spiffe accepted a wrong audience")
			}
		})
	}
}
