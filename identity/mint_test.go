package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	stdjson "encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMintClaimsAndHeader(t *testing.T) {
	clk := newClock(t0.Add(500 * time.Millisecond))
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", "P-384")
	tok, c, err := n.minter.Mint(MintRequest{Audience: []string{"peer.example"}, Principal: PrincipalNode, TTL: 5 * time.Minute, BindCert: n.cert})
	must(t, err)
	parts := strings.Split(tok, ".")
	hdr, _ := b64.DecodeString(parts[0])
	if string(hdr) != `{"alg":"ES384","kid":"`+n.key.KID+`","typ":"JWT"}` {
		t.Fatalf("header = %s", hdr)
	}
	payload, _ := b64.DecodeString(parts[1])
	var m map[string]any
	must(t, stdjson.Unmarshal(payload, &m))
	id := "spiffe://mainnet.example.net/node/r1"
	if m["iss"] != id || m["sub"] != id || m["aud"] != "peer.example" || m["principal"] != "NODE" {
		t.Fatalf("claims = %s", payload)
	}
	if int64(m["iat"].(float64)) != t0.Unix() || int64(m["nbf"].(float64)) != t0.Unix() || int64(m["exp"].(float64)) != t0.Unix()+300 {
		t.Fatalf("times = %s", payload)
	}
	cnf := m["cnf"].(map[string]any)
	if cnf["x5t#S256"] != CertThumbprint(n.cert) {
		t.Fatalf("cnf = %v", cnf)
	}
	jti, err := b64.DecodeString(m["jti"].(string))
	if err != nil || len(jti) != 16 {
		t.Fatalf("jti = %v", m["jti"])
	}
	sig, _ := b64.DecodeString(parts[2])
	if len(sig) != 96 {
		t.Fatalf("ES384 signature is %d bytes, want 96 (r||s)", len(sig))
	}
	if c.ID != m["jti"] || !c.Expiry.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("returned claims = %+v", c)
	}
	// Several audiences are a JSON array.
	tok, _, err = n.minter.Mint(MintRequest{Audience: []string{"a", "b"}, Principal: PrincipalUser})
	must(t, err)
	u, err := ParseUnverified(tok, 0)
	must(t, err)
	if len(u.Claims.Audience) != 2 || u.Claims.Principal != PrincipalUser || u.Claims.CertThumbprint != "" {
		t.Fatalf("claims = %+v", u.Claims)
	}
	payload, _ = b64.DecodeString(strings.Split(tok, ".")[1])
	if !bytes.Contains(payload, []byte(`"aud":["a","b"]`)) || bytes.Contains(payload, []byte("cnf")) {
		t.Fatalf("payload = %s", payload)
	}
}

func TestMintRandInjected(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", "Ed25519")
	m, err := NewMinter(MinterConfig{Key: n.signer, Cert: n.cert, Clock: clk.Now, Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 32))})
	must(t, err)
	_, c, err := m.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode})
	must(t, err)
	if c.ID != b64.EncodeToString(bytes.Repeat([]byte{7}, 16)) {
		t.Fatalf("jti = %s", c.ID)
	}
	_, _, err = m.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode})
	must(t, err)
	if _, _, err = m.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode}); !errors.Is(err, ErrMint) {
		t.Fatalf("exhausted Rand: %v", err)
	}
}

func TestMintNeverOutlivesCert(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", "P-256") // cert valid until t0+24h
	// Clipped to NotAfter.
	clk.Advance(24*time.Hour - 2*time.Minute)
	_, c, err := n.minter.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode, TTL: time.Hour})
	must(t, err)
	if !c.Expiry.Equal(n.cert.NotAfter) {
		t.Fatalf("exp = %v, want %v", c.Expiry, n.cert.NotAfter)
	}
	// Refused when less than MinLifetime is left.
	clk.Advance(time.Minute + 45*time.Second)
	if _, _, err := n.minter.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode}); !errors.Is(err, ErrMint) {
		t.Fatalf("near expiry: %v", err)
	}
	clk.Advance(time.Hour)
	if _, _, err := n.minter.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode}); !errors.Is(err, ErrMint) {
		t.Fatalf("expired: %v", err)
	}
	// And before the certificate is valid.
	clk.Advance(-48 * time.Hour)
	if _, _, err := n.minter.Mint(MintRequest{Audience: []string{"a"}, Principal: PrincipalNode}); !errors.Is(err, ErrMint) {
		t.Fatalf("not yet valid: %v", err)
	}
}

func TestMintBadRequests(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", "P-384")
	m, err := NewMinter(MinterConfig{Key: n.signer, Cert: n.cert, Clock: clk.Now, Principals: []Principal{PrincipalNode}})
	must(t, err)
	for name, req := range map[string]MintRequest{
		"no audience":       {Principal: PrincipalNode},
		"empty audience":    {Audience: []string{""}, Principal: PrincipalNode},
		"too many":          {Audience: make([]string, 33), Principal: PrincipalNode},
		"unknown principal": {Audience: []string{"a"}, Principal: "ROOT"},
		"not granted":       {Audience: []string{"a"}, Principal: PrincipalAdmin},
		"negative TTL":      {Audience: []string{"a"}, Principal: PrincipalNode, TTL: -time.Second},
		"TTL over max":      {Audience: []string{"a"}, Principal: PrincipalNode, TTL: 25 * time.Hour},
	} {
		if _, _, err := m.Mint(req); !errors.Is(err, ErrMint) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestMinterConfig(t *testing.T) {
	clk := newClock(t0)
	p := newPKI(t, "mainnet.example.net", t0)
	n := p.newNode(t, clk, "r1", "P-384")
	other := newSigner(t, "P-384")
	rsaLike := mustKey(t, elliptic.P521())
	for name, cfg := range map[string]MinterConfig{
		"no key":          {Cert: n.cert},
		"no cert":         {Key: n.signer},
		"cert of another": {Key: other, Cert: n.cert},
		"default > max":   {Key: n.signer, Cert: n.cert, DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour},
		"negative":        {Key: n.signer, Cert: n.cert, MinLifetime: -1},
		"bad principal":   {Key: n.signer, Cert: n.cert, Principals: []Principal{"ROOT"}},
		"no SPIFFE ID":    {Key: n.signer, Cert: p.inter},
		"P-521 key":       {Key: rsaLike, Cert: p.issue(t, rsaLike.Public(), KindNode, "x", t0, t0.Add(time.Hour))},
	} {
		if _, err := NewMinter(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// TestSignatureConversion checks r||s <-> ASN.1 on values with leading
// zeros, which a careless conversion gets wrong about once in 256 tokens.
func TestSignatureConversion(t *testing.T) {
	k := mustKey(t, elliptic.P384())
	h := sha512.Sum384([]byte("x"))
	for _, rs := range [][2]*big.Int{
		{big.NewInt(1), big.NewInt(2)},
		{new(big.Int).Lsh(big.NewInt(1), 300), new(big.Int).Lsh(big.NewInt(255), 376)}, // high bit set
	} {
		raw := make([]byte, 96)
		rs[0].FillBytes(raw[:48])
		rs[1].FillBytes(raw[48:])
		der, ok := rsToASN1(raw, 48)
		if !ok {
			t.Fatal("rsToASN1")
		}
		back, err := asn1ToRS(der, 48)
		if err != nil || !bytes.Equal(back, raw) {
			t.Fatalf("round trip %x != %x (%v)", back, raw, err)
		}
	}
	for i := 0; i < 300; i++ {
		der, err := ecdsa.SignASN1(rand.Reader, k, h[:])
		must(t, err)
		raw, err := asn1ToRS(der, 48)
		must(t, err)
		if !verifyJWS(&k.PublicKey, AlgES384, []byte("x"), raw) {
			t.Fatalf("signature %d does not verify after conversion", i)
		}
	}
	if _, ok := rsToASN1(make([]byte, 95), 48); ok {
		t.Fatal("wrong width accepted")
	}
	for _, der := range [][]byte{nil, {0x30, 0}, {0x30, 3, 2, 1, 0x80}, append([]byte{0x30, 0x06, 2, 1, 1, 2, 1, 1}, 0)} {
		if _, err := asn1ToRS(der, 48); err == nil {
			t.Fatalf("malformed DER %x accepted", der)
		}
	}
}

// TestClaimsJSONRoundTrip: claims as an API answer carries them decode back
// to what was minted.
func TestClaimsJSONRoundTrip(t *testing.T) {
	now := time.Unix(1_900_000_000, 0).UTC()
	in := Claims{Issuer: "spiffe://a.example/node/n1", Subject: "spiffe://a.example/node/n1", Audience: []string{"x", "y"},
		Expiry: now.Add(time.Hour), NotBefore: now, IssuedAt: now, ID: "jti-1", Principal: PrincipalNode, CertThumbprint: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}
	b, err := stdjson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Claims
	if err := stdjson.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.Expiry.Equal(in.Expiry) || !out.IssuedAt.Equal(in.IssuedAt) || !out.NotBefore.Equal(in.NotBefore) {
		t.Fatalf("times: in %+v, out %+v", in, out)
	}
	out.Expiry, out.IssuedAt, out.NotBefore = in.Expiry, in.IssuedAt, in.NotBefore
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	if err := stdjson.Unmarshal([]byte(`{"iss":"x"}`), &out); err == nil {
		t.Fatal("claims without sub, aud and times decoded")
	}
}
