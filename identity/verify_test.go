package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"crypto/x509"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// validClaims returns the claims a correct token of f.node would carry.
func (f *fixture) validClaims() map[string]any {
	now := f.clk.Now().Unix()
	id := f.node.minter.ID().String()
	return map[string]any{
		"iss": id, "sub": id, "aud": "peer.example",
		"exp": now + 300, "nbf": now, "iat": now,
		"jti": "AAAAAAAAAAAAAAAAAAAAAA", "principal": "NODE",
	}
}

func (f *fixture) header(alg string) string {
	return `{"alg":"` + alg + `","kid":"` + f.node.key.KID + `","typ":"JWT"}`
}

// signed crafts a token of f.node with claims modified by mod.
func (f *fixture) signed(t *testing.T, mod func(map[string]any)) string {
	t.Helper()
	c := f.validClaims()
	if mod != nil {
		mod(c)
	}
	b, err := stdjson.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return craft(t, f.node.signer, f.node.minter.Algorithm(), f.header(f.node.minter.Algorithm()), string(b))
}

func TestVerifyGood(t *testing.T) {
	for _, typ := range []string{"P-384", "P-256", "Ed25519"} {
		t.Run(typ, func(t *testing.T) {
			f := newFixture(t, typ, nil)
			tok, claims, err := f.node.minter.Mint(MintRequest{Audience: []string{"peer.example", "other"}, Principal: PrincipalNode})
			if err != nil {
				t.Fatal(err)
			}
			vd, err := f.verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if vd.Node != "r1" || vd.Network != "mainnet.example.net" || vd.Kind != KindNode || vd.KID != f.node.key.KID {
				t.Fatalf("verified = %+v", vd)
			}
			if vd.Claims.ID != claims.ID || vd.Claims.Principal != PrincipalNode || len(vd.Claims.Audience) != 2 {
				t.Fatalf("claims = %+v, minted %+v", vd.Claims, claims)
			}
			vd.Claims.Audience[0] = "mutated by the caller"
			// Second time from the cache, same result.
			vd2, err := f.verify(tok)
			if err != nil || vd2.Claims.ID != vd.Claims.ID || vd2.Claims.Audience[0] != "peer.example" {
				t.Fatalf("cached verify: %v %+v", err, vd2)
			}
			vd2.Claims.Audience[0] = "again"
			if vd3, _ := f.verify(tok); vd3.Claims.Audience[0] != "peer.example" {
				t.Fatal("a caller corrupted the cache")
			}
			if s := f.v.Stats(); s.Hits != 2 || s.Misses != 1 || s.Cached != 1 {
				t.Fatalf("stats = %+v", s)
			}
		})
	}
}

// TestVerifyBadTokens is the table of tokens that must be refused, each
// with the reason it must be refused for.
func TestVerifyBadTokens(t *testing.T) {
	f := newFixture(t, "P-384", nil)
	good := f.node.mint(t, MintRequest{})
	parts := strings.Split(good, ".")
	kid := f.node.key.KID
	p384JWK, _ := stdjson.Marshal(f.node.minter.JWK())

	other := newPKI(t, "mainnet.example.net", t0) // same network name, different CA
	stranger := other.newNode(t, f.clk, "r1", "P-384")

	hs384 := func() string {
		in := b64.EncodeToString([]byte(`{"alg":"HS384","kid":"`+kid+`","typ":"JWT"}`)) + "." + parts[1]
		mac := hmac.New(sha512.New384, p384JWK)
		mac.Write([]byte(in))
		return in + "." + b64.EncodeToString(mac.Sum(nil))
	}

	tests := []struct {
		name  string
		token func() string
		req   func(*VerifyRequest)
		setup func() (undo func())
		want  error
	}{
		{name: "empty", token: func() string { return "" }, want: ErrMalformed},
		{name: "one part", token: func() string { return "abc" }, want: ErrMalformed},
		{name: "two parts", token: func() string { return parts[0] + "." + parts[1] }, want: ErrMalformed},
		{name: "four parts", token: func() string { return good + ".x" }, want: ErrMalformed},
		{name: "padding", token: func() string { return parts[0] + "=." + parts[1] + "." + parts[2] }, want: ErrMalformed},
		{name: "newline in part", token: func() string { return parts[0] + "\n." + parts[1] + "." + parts[2] }, want: ErrMalformed},
		{name: "header not JSON", token: func() string { return b64.EncodeToString([]byte("{")) + "." + parts[1] + "." + parts[2] }, want: ErrMalformed},
		{name: "header duplicate alg", token: func() string {
			return craft(t, f.node.signer, AlgES384, `{"alg":"ES384","alg":"ES384","kid":"`+kid+`"}`, `{}`)
		}, want: ErrMalformed},
		{name: "header crit", token: func() string {
			return craft(t, f.node.signer, AlgES384, `{"alg":"ES384","kid":"`+kid+`","crit":["exp"]}`, `{}`)
		}, want: ErrMalformed},
		{name: "header embedded jwk", token: func() string {
			return craft(t, f.node.signer, AlgES384, `{"alg":"ES384","kid":"`+kid+`","jwk":`+string(p384JWK)+`}`, `{}`)
		}, want: ErrMalformed},
		{name: "header no kid", token: func() string { return craft(t, f.node.signer, AlgES384, `{"alg":"ES384"}`, `{}`) }, want: ErrMalformed},
		{name: "header typ not JWT", token: func() string {
			return craft(t, f.node.signer, AlgES384, `{"alg":"ES384","kid":"`+kid+`","typ":"at+jwt"}`, `{}`)
		}, want: ErrMalformed},
		{name: "truncated payload", token: func() string { return parts[0] + "." + parts[1][:len(parts[1])/4*4-3] + "." + parts[2] }, want: ErrMalformed},
		{name: "truncated payload, valid base64", token: func() string { return parts[0] + "." + parts[1][:len(parts[1])/4*4-4] + "." + parts[2] }, want: ErrSignature},
		{name: "truncated signature", token: func() string { return good[:len(good)-8] }, want: ErrSignature},
		{name: "oversized", token: func() string { return good + strings.Repeat("A", DefaultMaxTokenSize) }, want: ErrTooLarge},
		{name: "claims duplicate name", token: func() string {
			c := f.validClaims()
			b, _ := stdjson.Marshal(c)
			dup := `{"principal":"ADMIN",` + string(b[1:])
			return craft(t, f.node.signer, AlgES384, f.header(AlgES384), dup)
		}, want: ErrClaims},
		{name: "claims missing jti", token: func() string { return f.signed(t, func(c map[string]any) { delete(c, "jti") }) }, want: ErrClaims},
		{name: "claims fractional exp", token: func() string { return f.signed(t, func(c map[string]any) { c["exp"] = 1.5e9 + 0.5 }) }, want: ErrClaims},
		{name: "claims aud number", token: func() string { return f.signed(t, func(c map[string]any) { c["aud"] = 7 }) }, want: ErrClaims},
		{name: "alg none", token: func() string {
			return b64.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`"}`)) + "." + parts[1] + "."
		}, want: ErrAlgNotAllowed},
		{name: "HS384 with the public key as secret", token: hs384, want: ErrAlgNotAllowed},
		{name: "RS256", token: func() string { return craft(t, f.node.signer, "RS256", `{"alg":"RS256","kid":"`+kid+`"}`, `{}`) }, want: ErrAlgNotAllowed},
		{name: "ES256 header on a P-384 key", token: func() string { return craft(t, f.node.signer, AlgES256, f.header(AlgES256), parts[1]) }, want: ErrAlgKeyMismatch},
		{name: "EdDSA header on a P-384 key", token: func() string {
			return b64.EncodeToString([]byte(f.header(AlgEdDSA))) + "." + parts[1] + "." + parts[2]
		}, want: ErrAlgKeyMismatch},
		{name: "bad signature", token: func() string {
			sig := []byte(parts[2])
			if sig[3] == 'A' { // stay within the base64url alphabet
				sig[3] = 'B'
			} else {
				sig[3] = 'A'
			}
			return parts[0] + "." + parts[1] + "." + string(sig)
		}, want: ErrSignature},
		{name: "payload swapped", token: func() string {
			other := f.signed(t, func(c map[string]any) { c["principal"] = "USER" })
			return parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
		}, want: ErrSignature},
		{name: "unknown kid", token: func() string { return stranger.mint(t, MintRequest{}) }, want: ErrUnknownKey},
		{name: "chain to another CA", token: func() string { return stranger.mint(t, MintRequest{}) },
			setup: func() func() { f.keys.Put(stranger.key); return func() { f.keys.Remove(stranger.key.KID) } }, want: ErrChain},
		{name: "network not accepted", token: func() string { return good },
			setup: func() func() {
				must(t, f.v.SetAnchors(f.pki.anchors("othernet.example")))
				return func() { must(t, f.v.SetAnchors(f.pki.anchors())) }
			}, want: ErrNetworkNotAccepted},
		{name: "wrong audience", token: func() string { return good }, req: func(r *VerifyRequest) { r.Audience = []string{"someone.else"} }, want: ErrAudience},
		{name: "expired", token: func() string { return good },
			setup: func() func() {
				f.clk.Advance(10*time.Minute + 31*time.Second)
				return func() { f.clk.Advance(-10*time.Minute - 31*time.Second) }
			},
			want: ErrExpired},
		{name: "not yet valid", token: func() string { return f.signed(t, func(c map[string]any) { c["nbf"] = c["nbf"].(int64) + 120 }) }, want: ErrNotYetValid},
		{name: "issued in the future", token: func() string { return f.signed(t, func(c map[string]any) { c["iat"] = c["iat"].(int64) + 120 }) }, want: ErrIssuedInFuture},
		{name: "iat after exp", token: func() string { return f.signed(t, func(c map[string]any) { c["iat"] = c["exp"].(int64) + 1 }) }, want: ErrClaims},
		{name: "outlives the certificate", token: func() string {
			return f.signed(t, func(c map[string]any) { c["exp"] = f.node.cert.NotAfter.Unix() + 60 })
		}, want: ErrKeyExpired},
		{name: "revoked token", token: func() string { return good }, setup: revoke(f, RevokeToken, func() string { id, _ := ParseUnverified(good, 0); return id.Claims.ID }), want: ErrTokenRevoked},
		{name: "revoked key", token: func() string { return good }, setup: revoke(f, RevokeKey, func() string { return kid }), want: ErrKeyRevoked},
		{name: "revoked cert", token: func() string { return good }, setup: revoke(f, RevokeCert, func() string { return SerialHex(f.node.cert) }), want: ErrCertRevoked},
		{name: "revoked intermediate", token: func() string { return good }, setup: revoke(f, RevokeCert, func() string { return SerialHex(f.pki.inter) }), want: ErrCertRevoked},
		{name: "revoked node", token: func() string { return good }, setup: revoke(f, RevokeNode, func() string { return "r1" }), want: ErrNodeRevoked},
		{name: "iss != sub", token: func() string {
			return f.signed(t, func(c map[string]any) { c["iss"] = "spiffe://mainnet.example.net/node/r2" })
		}, want: ErrIssuer},
		{name: "sub != certificate", token: func() string {
			return f.signed(t, func(c map[string]any) {
				c["iss"] = "spiffe://mainnet.example.net/admin/r1"
				c["sub"] = c["iss"]
			})
		}, want: ErrSubject},
		{name: "unknown principal", token: func() string { return f.signed(t, func(c map[string]any) { c["principal"] = "ROOT" }) }, want: ErrPrincipal},
		{name: "principal not granted", token: func() string { return f.signed(t, func(c map[string]any) { c["principal"] = "ADMIN" }) }, want: ErrPrincipalNotGranted},
		{name: "cnf mismatch", token: func() string { return f.node.mint(t, MintRequest{BindCert: f.node.cert}) },
			req: func(r *VerifyRequest) { r.PeerCert = f.pki.inter }, want: ErrBinding},
		{name: "cnf without a presented certificate", token: func() string { return f.node.mint(t, MintRequest{BindCert: f.node.cert}) }, want: ErrBindingMissing},
		{name: "unbound where binding required", token: func() string { return good },
			req: func(r *VerifyRequest) { r.RequireBinding = true; r.PeerCert = f.node.cert }, want: ErrBindingMissing},
		{name: "cnf not a thumbprint", token: func() string {
			return f.signed(t, func(c map[string]any) { c["cnf"] = map[string]string{"x5t#S256": "abc"} })
		}, want: ErrClaims},
		{name: "staged key", token: func() string { return good }, setup: keyState(f, KeyStaged), want: ErrKeyState},
		{name: "unknown key state", token: func() string { return good }, setup: keyState(f, "revoked"), want: ErrKeyState},
		{name: "key owner differs", token: func() string { return good }, setup: func() func() {
			k := f.node.key
			k.Node = "r9"
			f.keys.Put(k)
			f.v.Invalidate()
			return func() { f.keys.Put(f.node.key); f.v.Invalidate() }
		}, want: ErrKeyCertMismatch},
		{name: "key source maps kid to another key", token: func() string { return good }, setup: func() func() {
			k := stranger.key
			k.KID = kid
			f.keys.Put(k)
			return func() { f.keys.Put(f.node.key); f.v.Invalidate() }
		}, want: ErrSignature}, // same alg: the signature fails under the wrong key
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				defer tc.setup()()
			}
			req := VerifyRequest{Token: tc.token()}
			if tc.req != nil {
				tc.req(&req)
			}
			_, err := f.v.Verify(context.Background(), req)
			wantErr(t, err, tc.want)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Reason == "" || ve.Reason == "refused" {
				t.Fatalf("not a *VerifyError with a reason: %#v", err)
			}
		})
	}
	// The good token still verifies after all that.
	if _, err := f.verify(good); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func revoke(f *fixture, kind string, id func() string) func() func() {
	return func() func() {
		f.revs.Revoke(kind, id())
		return func() { f.revs.Remove(kind, id()) }
	}
}

func keyState(f *fixture, s KeyState) func() func() {
	return func() func() {
		k := f.node.key
		k.State = s
		f.keys.Put(k)
		f.v.Invalidate()
		return func() { f.keys.Put(f.node.key); f.v.Invalidate() }
	}
}

func TestVerifyErrorShape(t *testing.T) {
	f := newFixture(t, "P-384", nil)
	_, err := f.verify("x.y")
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Reason != "malformed" || !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %#v", err)
	}
	if !strings.HasPrefix(err.Error(), "identity: token refused (malformed): ") {
		t.Fatalf("message = %q", err)
	}
	// Every revocation error is also ErrRevoked.
	for _, e := range []error{ErrTokenRevoked, ErrKeyRevoked, ErrCertRevoked, ErrNodeRevoked} {
		if !errors.Is(refuse(e, ""), ErrRevoked) {
			t.Fatalf("%v is not ErrRevoked", e)
		}
	}
}

func TestVerifySkew(t *testing.T) {
	f := newFixture(t, "P-384", func(c *VerifierConfig) { c.CacheSize = -1 })
	// nbf 20 s ahead: inside the default 30 s skew.
	tok := f.signed(t, func(c map[string]any) { c["nbf"] = c["nbf"].(int64) + 20; c["iat"] = c["nbf"] })
	if _, err := f.verify(tok); err != nil {
		t.Fatal(err)
	}
	// exp 20 s past: still inside.
	good := f.node.mint(t, MintRequest{TTL: time.Minute})
	f.clk.Advance(time.Minute + 20*time.Second)
	if _, err := f.verify(good); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(11 * time.Second)
	_, err := f.verify(good)
	wantErr(t, err, ErrExpired)
}

func TestVerifyCacheRevocationAndInvalidate(t *testing.T) {
	f := newFixture(t, "P-384", nil)
	tok := f.node.mint(t, MintRequest{})
	if _, err := f.verify(tok); err != nil {
		t.Fatal(err)
	}
	// Revoked after caching, without Invalidate: a hit re-checks revocations.
	f.revs.Revoke(RevokeNode, "r1")
	_, err := f.verify(tok)
	wantErr(t, err, ErrNodeRevoked)
	if f.v.Stats().Hits != 1 {
		t.Fatalf("expected the refusal to come from a cache hit: %+v", f.v.Stats())
	}
	f.revs.Remove(RevokeNode, "r1")
	// A key removed from the trust state takes effect on Invalidate.
	f.keys.Remove(f.node.key.KID)
	if _, err := f.verify(tok); err != nil {
		t.Fatalf("cached token before Invalidate: %v", err)
	}
	g := f.v.Generation()
	f.v.Invalidate()
	if f.v.Generation() != g+1 || f.v.Stats().Cached != 0 {
		t.Fatalf("Invalidate did not empty the cache: %+v", f.v.Stats())
	}
	_, err = f.verify(tok)
	wantErr(t, err, ErrUnknownKey)
}

func TestVerifyCacheExpiresAtExp(t *testing.T) {
	f := newFixture(t, "P-384", nil)
	tok := f.node.mint(t, MintRequest{TTL: time.Minute})
	if _, err := f.verify(tok); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute + 31*time.Second)
	_, err := f.verify(tok)
	wantErr(t, err, ErrExpired)
	if s := f.v.Stats(); s.Hits != 0 {
		t.Fatalf("an expired entry was served: %+v", s)
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	f := newFixture(t, "P-256", func(c *VerifierConfig) { c.CacheSize = 20 })
	for i := 0; i < 50; i++ {
		if _, err := f.verify(f.node.mint(t, MintRequest{})); err != nil {
			t.Fatal(err)
		}
		if n := f.v.Stats().Cached; n > 20 {
			t.Fatalf("cache holds %d > 20", n)
		}
	}
}

func TestVerifyCacheRequestChecks(t *testing.T) {
	// Audience and binding are checked per request, also on cache hits.
	f := newFixture(t, "P-384", nil)
	tok := f.node.mint(t, MintRequest{BindCert: f.node.cert})
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, VerifyRequest{Token: tok, PeerCert: f.node.cert}); err != nil {
		t.Fatal(err)
	}
	_, err := f.v.Verify(ctx, VerifyRequest{Token: tok, PeerCert: f.pki.inter})
	wantErr(t, err, ErrBinding)
	_, err = f.v.Verify(ctx, VerifyRequest{Token: tok})
	wantErr(t, err, ErrBindingMissing)
	_, err = f.v.Verify(ctx, VerifyRequest{Token: tok, PeerCert: f.node.cert, Audience: []string{"x"}})
	wantErr(t, err, ErrAudience)
	if s := f.v.Stats(); s.Hits != 3 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestVerifyRefreshOnUnknownKid(t *testing.T) {
	f := newFixture(t, "P-384", func(c *VerifierConfig) { c.RefreshCooldown = time.Minute })
	n2 := f.pki.newNode(t, f.clk, "r2", "P-384")
	n3 := f.pki.newNode(t, f.clk, "r3", "P-384")
	f.keys.pending = []Key{n2.key}
	if _, err := f.verify(n2.mint(t, MintRequest{})); err != nil {
		t.Fatalf("refresh should have found the key: %v", err)
	}
	if f.keys.refreshCalls() != 1 {
		t.Fatalf("refresh calls = %d", f.keys.refreshCalls())
	}
	// Within the cooldown, an unknown kid does not refresh again.
	f.keys.pending = []Key{n3.key}
	_, err := f.verify(n3.mint(t, MintRequest{}))
	wantErr(t, err, ErrUnknownKey)
	if f.keys.refreshCalls() != 1 {
		t.Fatalf("refresh calls = %d", f.keys.refreshCalls())
	}
	// After it, one refresh again.
	f.clk.Advance(time.Minute)
	if _, err := f.verify(n3.mint(t, MintRequest{})); err != nil {
		t.Fatal(err)
	}
	if f.keys.refreshCalls() != 2 || f.v.Stats().Refreshes != 2 {
		t.Fatalf("refresh calls = %d", f.keys.refreshCalls())
	}
	// A failing refresh reports both.
	f.clk.Advance(time.Minute)
	f.keys.fail = errors.New("roots unreachable")
	_, err = f.verify(craft(t, n3.signer, AlgES384, `{"alg":"ES384","kid":"nope"}`, `{}`))
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "roots unreachable") {
		t.Fatalf("err = %v", err)
	}
}

func TestRotationRetiringKey(t *testing.T) {
	f := newFixture(t, "P-384", func(c *VerifierConfig) { c.CacheSize = -1 })
	old := f.node
	oldTok := old.mint(t, MintRequest{TTL: 10 * time.Minute})

	// Rotate: a new key and certificate; the previous key turns retiring.
	f.clk.Advance(time.Minute)
	rotatedAt := f.clk.Now()
	nw := f.pki.newNode(t, f.clk, "r1", "P-384")
	retiring := old.key
	retiring.State, retiring.RetiringSince = KeyRetiring, rotatedAt
	f.keys.Put(retiring)
	f.keys.Put(nw.key)
	f.v.Invalidate()

	// Before the line: the previous key's token verifies, and so does the new one.
	f.clk.Advance(5 * time.Minute)
	if _, err := f.verify(oldTok); err != nil {
		t.Fatalf("token of the retiring key: %v", err)
	}
	newTok := nw.mint(t, MintRequest{TTL: time.Hour})
	if vd, err := f.verify(newTok); err != nil || vd.KID != nw.key.KID {
		t.Fatalf("token of the new key: %v", err)
	}
	// The retiring key may not sign new tokens.
	late := old.mint(t, MintRequest{})
	_, err := f.verify(late)
	wantErr(t, err, ErrKeyState)

	// After the line: the old token has expired; the key can be dropped.
	f.clk.Advance(5 * time.Minute)
	_, err = f.verify(oldTok)
	wantErr(t, err, ErrExpired)
	f.keys.Remove(old.key.KID)
	f.v.Invalidate()
	_, err = f.verify(oldTok)
	wantErr(t, err, ErrUnknownKey)
	if _, err := f.verify(newTok); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyChainCache(t *testing.T) {
	f := newFixture(t, "P-384", func(c *VerifierConfig) { c.CacheSize = -1 })
	for i := 0; i < 3; i++ {
		if _, err := f.verify(f.node.mint(t, MintRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	f.v.mu.RLock()
	n := len(f.v.chains)
	f.v.mu.RUnlock()
	if n != 1 {
		t.Fatalf("chain cache holds %d entries", n)
	}
	// A renewed certificate for the same key: the cached chain is not reused.
	renewed := f.pki.issue(t, f.node.signer.Public(), KindNode, "r1", f.clk.Now().Add(-time.Minute), f.clk.Now().Add(48*time.Hour))
	k := f.node.key
	k.Chain = []*x509.Certificate{renewed, f.pki.inter}
	f.keys.Put(k)
	f.revs.Revoke(RevokeCert, SerialHex(f.node.cert))
	if _, err := f.verify(f.node.mint(t, MintRequest{})); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
}

func TestAdminKind(t *testing.T) {
	// Admin credentials are certificates of kind admin; their tokens verify too.
	f := newFixture(t, "P-384", nil)
	s := newSigner(t, "P-384")
	cert := f.pki.issue(t, s.Public(), KindAdmin, "system", t0.Add(-time.Minute), t0.Add(time.Hour))
	m, err := NewMinter(MinterConfig{Key: s, Cert: cert, Chain: []*x509.Certificate{f.pki.inter}, Clock: f.clk.Now})
	must(t, err)
	k, err := KeyFromJWK(m.JWK())
	must(t, err)
	k.Node, k.State, k.Principals = "system", KeyActive, []Principal{PrincipalAdmin}
	f.keys.Put(k)
	tok, _, err := m.Mint(MintRequest{Audience: []string{"peer.example"}, Principal: PrincipalAdmin, TTL: 2 * time.Hour})
	must(t, err)
	vd, err := f.verify(tok)
	must(t, err)
	if vd.Kind != KindAdmin || vd.Node != "system" || vd.Claims.Principal != PrincipalAdmin {
		t.Fatalf("verified = %+v", vd)
	}
	if !vd.Claims.Expiry.Equal(cert.NotAfter) {
		t.Fatalf("exp %v not clipped to %v", vd.Claims.Expiry, cert.NotAfter)
	}
}

func TestVerifierConfig(t *testing.T) {
	f := newFixture(t, "P-384", nil)
	tests := []struct {
		name string
		cfg  VerifierConfig
	}{
		{"no keys", VerifierConfig{Revocations: f.revs}},
		{"no revocations", VerifierConfig{Keys: f.keys}},
		{"negative skew", VerifierConfig{Keys: f.keys, Revocations: f.revs, Skew: -1}},
		{"huge skew", VerifierConfig{Keys: f.keys, Revocations: f.revs, Skew: time.Hour}},
		{"bad network", VerifierConfig{Keys: f.keys, Revocations: f.revs, Anchors: TrustAnchors{Accepted: []string{"Bad_Net"}}}},
		{"root not CA", VerifierConfig{Keys: f.keys, Revocations: f.revs, Anchors: TrustAnchors{Roots: map[string][]*x509.Certificate{"a.b": {f.node.cert}}}}},
	}
	for _, tc := range tests {
		if _, err := NewVerifier(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	if err := f.v.SetAnchors(TrustAnchors{Accepted: []string{"-x"}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("SetAnchors: %v", err)
	}
	// No audience anywhere: refused, fail closed.
	v, err := NewVerifier(VerifierConfig{Keys: f.keys, Revocations: f.revs, Anchors: f.pki.anchors(), Clock: f.clk.Now})
	must(t, err)
	_, err = v.Verify(context.Background(), VerifyRequest{Token: f.node.mint(t, MintRequest{})})
	wantErr(t, err, ErrAudience)
}

func TestVerifyConcurrent(t *testing.T) {
	f := newFixture(t, "P-256", func(c *VerifierConfig) { c.CacheSize = 8 })
	toks := make([]string, 16)
	for i := range toks {
		toks[i] = f.node.mint(t, MintRequest{})
	}
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func(w int) {
			for i := 0; i < 64; i++ {
				if i%16 == 0 && w == 0 {
					f.v.Invalidate()
				}
				if _, err := f.verify(toks[(i+w)%len(toks)]); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < 4; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
