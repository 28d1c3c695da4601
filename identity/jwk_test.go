package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestThumbprintKnownAnswer(t *testing.T) {
	// RFC 8037 A.3: the thumbprint of the Ed25519 key of A.2.
	x, _ := b64.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	got, err := Thumbprint(ed25519.PublicKey(x))
	must(t, err)
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("thumbprint = %s, want %s", got, want)
	}
}

func TestNewJWK(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	for _, tc := range []struct{ typ, alg, crv, kty string }{
		{"P-384", AlgES384, "P-384", "EC"}, {"P-256", AlgES256, "P-256", "EC"}, {"Ed25519", AlgEdDSA, "Ed25519", "OKP"},
	} {
		n := p.newNode(t, clk, "r1", tc.typ)
		j := n.minter.JWK()
		if j.Alg != tc.alg || j.Crv != tc.crv || j.Kty != tc.kty || j.Use != "sig" || len(j.X5c) != 2 {
			t.Fatalf("%s: jwk = %+v", tc.typ, j)
		}
		if tp, _ := Thumbprint(n.signer.Public()); j.Kid != tp {
			t.Fatalf("%s: kid %s != thumbprint %s", tc.typ, j.Kid, tp)
		}
		der, _ := base64.StdEncoding.DecodeString(j.X5c[0])
		if string(der) != string(n.cert.Raw) {
			t.Fatalf("%s: x5c[0] is not the leaf", tc.typ)
		}
		// Round trip through the strict decoder.
		b, _ := stdjson.Marshal(j)
		back, err := ParseJWK(b, Limits{})
		must(t, err)
		if fmt.Sprint(back) != fmt.Sprint(j) {
			t.Fatalf("%s: round trip %+v != %+v", tc.typ, back, j)
		}
		k, err := KeyFromJWK(back)
		must(t, err)
		if !samePublicKey(k.Public, n.signer.Public()) || len(k.Chain) != 2 {
			t.Fatalf("%s: KeyFromJWK = %+v", tc.typ, k)
		}
	}
	// A chain whose leaf is not the key.
	other := newSigner(t, "P-384")
	if _, err := NewJWK(other.Public(), []*x509.Certificate{p.inter}); !errors.Is(err, ErrInvalidJWK) {
		t.Fatalf("mismatched chain: %v", err)
	}
	if _, err := NewJWK(&ecdsa.PublicKey{}, nil); err == nil {
		t.Fatal("empty key accepted")
	}
}

func TestJWKSEncodeETag(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	a, b := p.newNode(t, clk, "a", "P-384"), p.newNode(t, clk, "b", "Ed25519")
	s1, _ := JWKS{Keys: []JWK{a.minter.JWK(), b.minter.JWK()}}.Encode()
	s2, _ := JWKS{Keys: []JWK{b.minter.JWK(), a.minter.JWK()}}.Encode()
	if string(s1) != string(s2) || ETag(s1) != ETag(s2) {
		t.Fatal("encoding depends on key order")
	}
	if e := ETag(s1); !strings.HasPrefix(e, `"`) || !strings.HasSuffix(e, `"`) || strings.HasPrefix(e, `W/`) || len(e) != 45 {
		t.Fatalf("etag %s", e)
	}
	s3, _ := JWKS{Keys: []JWK{a.minter.JWK()}}.Encode()
	if ETag(s3) == ETag(s1) {
		t.Fatal("different content, same ETag")
	}
	doc, err := DecodeJWKS(s1, Limits{})
	must(t, err)
	if len(doc.Keys) != 2 {
		t.Fatalf("decoded %d keys", len(doc.Keys))
	}
	if _, ok := doc.Find(b.key.KID); !ok {
		t.Fatal("Find")
	}
	empty, _ := JWKS{}.Encode()
	if string(empty) != `{"keys":[]}` {
		t.Fatalf("empty JWKS = %s", empty)
	}
	// KeySet.JWKS publishes the same document.
	ks := NewKeySet(a.key, b.key)
	doc2, err := ks.JWKS()
	must(t, err)
	s4, _ := doc2.Encode()
	if string(s4) != string(s1) {
		t.Fatal("KeySet.JWKS differs")
	}
}

// TestDecodeJWKSBad is the table of JWKS documents the strict decoder refuses.
func TestDecodeJWKSBad(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	ec := p.newNode(t, clk, "a", "P-384").minter.JWK()
	ed := p.newNode(t, clk, "b", "Ed25519").minter.JWK()
	p256 := p.newNode(t, clk, "c", "P-256").minter.JWK()

	// member renders a JWK as JSON with one member replaced, added or removed.
	member := func(j JWK, name string, value any) string {
		var m map[string]any
		b, _ := stdjson.Marshal(j)
		_ = stdjson.Unmarshal(b, &m)
		if value == nil {
			delete(m, name)
		} else {
			m[name] = value
		}
		out, _ := stdjson.Marshal(m)
		return string(out)
	}
	set := func(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }
	good, _ := stdjson.Marshal(ec)
	sum := sha256.Sum256([]byte("x"))
	offCurve := ec
	yb, _ := b64.DecodeString(ec.Y)
	yb[len(yb)-1] ^= 1
	offCurve.Y = b64.EncodeToString(yb)

	tests := []struct {
		name string
		doc  string
		lim  Limits
	}{
		{"empty", "", Limits{}},
		{"not JSON", "{", Limits{}},
		{"array", "[]", Limits{}},
		{"no keys", `{}`, Limits{}},
		{"keys null", `{"keys":null}`, Limits{}},
		{"trailing data", set(string(good)) + "x", Limits{}},
		{"duplicate member", `{"keys":[],"keys":[]}`, Limits{}},
		{"duplicate key member", set(`{"kty":"EC",` + string(good)[1:]), Limits{}},
		{"invalid UTF-8", set(`{"note":"\xff",` + string(good)[1:]), Limits{}},
		{"too large", set(string(good)), Limits{MaxBytes: 100}},
		{"too many keys", set(string(good), member(ed, "x", ed.X)), Limits{MaxKeys: 1}},
		{"duplicate kid", set(string(good), string(good)), Limits{}},
		{"private d", set(member(ec, "d", "AAAA")), Limits{}},
		{"symmetric k", set(member(ec, "k", "AAAA")), Limits{}},
		{"RSA", set(`{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"x","alg":"RS256"}`), Limits{}},
		{"oct", set(`{"kty":"oct","k":"AAAA","kid":"x","alg":"HS256"}`), Limits{}},
		{"P-521", set(member(ec, "crv", "P-521")), Limits{}},
		{"X25519", set(member(ed, "crv", "X25519")), Limits{}},
		{"point off the curve", set(member(offCurve, "kid", offCurve.Kid)), Limits{}},
		{"short x", set(member(ec, "x", ec.X[:20])), Limits{}},
		{"x padded", set(member(ec, "x", ec.X+"=")), Limits{}},
		{"x standard base64", set(member(ec, "x", strings.ReplaceAll(strings.ReplaceAll(ec.X, "-", "+"), "_", "/")+"+/")), Limits{}},
		{"OKP with y", set(member(ed, "y", ec.Y)), Limits{}},
		{"no kid", set(member(ec, "kid", nil)), Limits{}},
		{"kid not thumbprint", set(member(ec, "kid", "my-key")), Limits{}},
		{"no alg", set(member(ec, "alg", nil)), Limits{}},
		{"alg none", set(member(ec, "alg", "none")), Limits{}},
		{"alg ES256 on P-384", set(member(ec, "alg", "ES256")), Limits{}},
		{"alg ES384 on P-256", set(member(p256, "alg", "ES384")), Limits{}},
		{"use enc", set(member(ec, "use", "enc")), Limits{}},
		{"key_ops sign", set(member(ec, "key_ops", []string{"sign"})), Limits{}},
		{"x5c leaf of another key", set(member(ec, "x5c", ed.X5c)), Limits{}},
		{"x5c not base64", set(member(ec, "x5c", []string{"%%%"})), Limits{}},
		{"x5c not DER", set(member(ec, "x5c", []string{"AAAA"})), Limits{}},
		{"x5c empty", set(member(ec, "x5c", []string{})), Limits{}},
		{"x5c too long", set(string(good)), Limits{MaxChain: 1}},
		{"x5t#S256 wrong", set(member(ec, "x5t#S256", b64.EncodeToString(sum[:]))), Limits{}},
		{"x5t wrong", set(member(ec, "x5t", "AAAA")), Limits{}},
		{"x5u", set(member(ec, "x5u", "https://example.net/x")), Limits{}},
		{"kty wrong type", set(member(ec, "kty", 1)), Limits{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJWKS([]byte(tc.doc), tc.lim)
			if !errors.Is(err, ErrInvalidJWK) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// And the good ones pass, unknown members ignored.
	for _, doc := range []string{set(string(good)), set(member(ec, "note", "hi"), member(ed, "key_ops", []string{"verify"})), `{"keys":[],"extra":1}`} {
		if _, err := DecodeJWKS([]byte(doc), Limits{}); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
	}
}

func TestKeyFromJWKNeedsChain(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	j := p.newNode(t, clk, "a", "P-384").minter.JWK()
	j.X5c = nil
	if _, err := KeyFromJWK(j); !errors.Is(err, ErrInvalidJWK) {
		t.Fatalf("err = %v", err)
	}
}

func TestDiscovery(t *testing.T) {
	d := NewDiscovery("https://root1.example.net:8443", "https://root1.example.net:8443/.well-known/jwks.json")
	b, err := stdjson.Marshal(d)
	must(t, err)
	for _, want := range []string{`"issuer":"https://root1.example.net:8443"`, `"jwks_uri":`, `"ES384"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s lacks %s", b, want)
		}
	}
	_ = time.Second
}
