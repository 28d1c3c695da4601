package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	stdjson "encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/go-json-experiment/json"
)

// JWK is the public JSON Web Key of a node key as keymesh publishes it
// (RFC 7517): kid is the RFC 7638 thumbprint, x5c the node certificate chain
// (leaf first, standard base64 DER), alg the one algorithm the key signs with,
// and use "sig". Field order is the wire order.
type JWK struct {
	Kty string   `json:"kty"`
	Crv string   `json:"crv"`
	X   string   `json:"x"`
	Y   string   `json:"y,omitempty"`
	Kid string   `json:"kid"`
	Alg string   `json:"alg"`
	Use string   `json:"use"`
	X5c []string `json:"x5c,omitempty"`
}

// JWKS is a JSON Web Key Set document ({"keys":[...]}).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// Limits bound the strict decoders of outside input. A zero field means the default.
type Limits struct {
	// MaxBytes bounds the document size. Default 1 MiB for a JWKS, 64 KiB for one JWK.
	MaxBytes int
	// MaxKeys bounds the number of keys in a JWKS. Default 1024.
	MaxKeys int
	// MaxChain bounds the number of certificates in one x5c. Default 8.
	MaxChain int
}

const (
	defaultMaxJWKSBytes = 1 << 20
	defaultMaxJWKBytes  = 64 << 10
	defaultMaxKeys      = 1024
	defaultMaxChain     = 8
)

func (l Limits) withDefaults(maxBytes int) Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = maxBytes
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = defaultMaxKeys
	}
	if l.MaxChain <= 0 {
		l.MaxChain = defaultMaxChain
	}
	return l
}

// Thumbprint returns the RFC 7638 JWK thumbprint of a public key: the
// base64url SHA-256 of its required members in lexicographic order without
// whitespace. It is the kid of every keymesh key.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	kty, crv, x, y, err := jwkMembers(pub)
	if err != nil {
		return "", err
	}
	return thumbprint(kty, crv, x, y), nil
}

func thumbprint(kty, crv, x, y string) string {
	// All member values are from fixed alphabets (base64url, curve names), so
	// no JSON escaping is needed.
	var s string
	if kty == "OKP" {
		s = `{"crv":"` + crv + `","kty":"OKP","x":"` + x + `"}`
	} else {
		s = `{"crv":"` + crv + `","kty":"EC","x":"` + x + `","y":"` + y + `"}`
	}
	sum := sha256.Sum256([]byte(s))
	return b64.EncodeToString(sum[:])
}

func jwkMembers(pub crypto.PublicKey) (kty, crv, x, y string, err error) {
	if _, err = AlgorithmFor(pub); err != nil {
		return "", "", "", "", err
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return "", "", "", "", fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
		}
		n := (len(raw) - 1) / 2
		return "EC", k.Curve.Params().Name, b64.EncodeToString(raw[1 : 1+n]), b64.EncodeToString(raw[1+n:]), nil
	case ed25519.PublicKey:
		return "OKP", "Ed25519", b64.EncodeToString(k), "", nil
	}
	return "", "", "", "", fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// NewJWK builds the public JWK of pub with its certificate chain (leaf first;
// the leaf must hold pub). The chain may be empty for a bare key, but keys
// published in a keymesh JWKS always carry it.
func NewJWK(pub crypto.PublicKey, chain []*x509.Certificate) (JWK, error) {
	kty, crv, x, y, err := jwkMembers(pub)
	if err != nil {
		return JWK{}, err
	}
	alg, _ := AlgorithmFor(pub)
	j := JWK{Kty: kty, Crv: crv, X: x, Y: y, Kid: thumbprint(kty, crv, x, y), Alg: alg, Use: "sig"}
	if len(chain) > 0 {
		if !samePublicKey(chain[0].PublicKey, pub) {
			return JWK{}, fmt.Errorf("%w: the leaf certificate does not hold the key", ErrInvalidJWK)
		}
		for _, c := range chain {
			j.X5c = append(j.X5c, base64.StdEncoding.EncodeToString(c.Raw))
		}
	}
	return j, nil
}

// samePublicKey compares two public keys of the supported types.
func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// jwkWire is the decoding form: it names the private members so that they can
// be refused, and the thumbprint members a verifier may meet.
type jwkWire struct {
	Kty     string   `json:"kty"`
	Crv     string   `json:"crv"`
	X       string   `json:"x"`
	Y       *string  `json:"y"`
	Kid     string   `json:"kid"`
	Alg     string   `json:"alg"`
	Use     *string  `json:"use"`
	KeyOps  []string `json:"key_ops"`
	X5c     []string `json:"x5c"`
	X5t     *string  `json:"x5t"`
	X5tS256 *string  `json:"x5t#S256"`
	X5u     *string  `json:"x5u"`

	D   *stdjson.RawMessage `json:"d"`
	P   *stdjson.RawMessage `json:"p"`
	Q   *stdjson.RawMessage `json:"q"`
	DP  *stdjson.RawMessage `json:"dp"`
	DQ  *stdjson.RawMessage `json:"dq"`
	QI  *stdjson.RawMessage `json:"qi"`
	K   *stdjson.RawMessage `json:"k"`
	Oth *stdjson.RawMessage `json:"oth"`
}

// ParseJWK strictly decodes one public JWK (see DecodeJWKS for the rules).
// Errors wrap ErrInvalidJWK.
func ParseJWK(data []byte, lim Limits) (JWK, error) {
	lim = lim.withDefaults(defaultMaxJWKBytes)
	if len(data) > lim.MaxBytes {
		return JWK{}, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidJWK, len(data), lim.MaxBytes)
	}
	var w jwkWire
	if err := json.Unmarshal(data, &w); err != nil {
		return JWK{}, fmt.Errorf("%w: %w", ErrInvalidJWK, err)
	}
	return w.check(lim)
}

// DecodeJWKS strictly decodes a JWKS document from outside:
//   - at most lim.MaxBytes and lim.MaxKeys; strict JSON (valid UTF-8, no
//     duplicate member names, no trailing data);
//   - every key EC P-256/P-384 (point on the curve) or OKP Ed25519, public
//     only (any private member is refused);
//   - kid present and equal to the RFC 7638 thumbprint; kids unique;
//   - alg present and fitting the key; use, if present, "sig"; key_ops, if
//     present, only "verify";
//   - x5c, if present, 1..lim.MaxChain DER certificates whose leaf holds the
//     key; x5t/x5t#S256, if present, the leaf's thumbprints; no x5u.
//
// Unknown members are ignored (RFC 7517 §4). Errors wrap ErrInvalidJWK.
func DecodeJWKS(data []byte, lim Limits) (JWKS, error) {
	lim = lim.withDefaults(defaultMaxJWKSBytes)
	if len(data) > lim.MaxBytes {
		return JWKS{}, fmt.Errorf("%w: JWKS of %d bytes, limit %d", ErrInvalidJWK, len(data), lim.MaxBytes)
	}
	var doc struct {
		Keys *[]jwkWire `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return JWKS{}, fmt.Errorf("%w: %w", ErrInvalidJWK, err)
	}
	if doc.Keys == nil {
		return JWKS{}, fmt.Errorf("%w: JWKS has no keys member", ErrInvalidJWK)
	}
	if len(*doc.Keys) > lim.MaxKeys {
		return JWKS{}, fmt.Errorf("%w: JWKS has %d keys, limit %d", ErrInvalidJWK, len(*doc.Keys), lim.MaxKeys)
	}
	out := JWKS{Keys: make([]JWK, 0, len(*doc.Keys))}
	seen := make(map[string]bool, len(*doc.Keys))
	for i, w := range *doc.Keys {
		j, err := w.check(lim)
		if err != nil {
			return JWKS{}, fmt.Errorf("key %d: %w", i, err)
		}
		if seen[j.Kid] {
			return JWKS{}, fmt.Errorf("%w: key %d: duplicate kid %q", ErrInvalidJWK, i, j.Kid)
		}
		seen[j.Kid] = true
		out.Keys = append(out.Keys, j)
	}
	return out, nil
}

func (w *jwkWire) check(lim Limits) (JWK, error) {
	bad := func(format string, args ...any) (JWK, error) {
		return JWK{}, fmt.Errorf("%w: %s", ErrInvalidJWK, fmt.Sprintf(format, args...))
	}
	if w.D != nil || w.P != nil || w.Q != nil || w.DP != nil || w.DQ != nil || w.QI != nil || w.K != nil || w.Oth != nil {
		return bad("private key members are not allowed")
	}
	if w.X5u != nil {
		return bad("x5u is not allowed")
	}
	j := JWK{Kty: w.Kty, Crv: w.Crv, X: w.X, Kid: w.Kid, Alg: w.Alg, Use: "sig", X5c: w.X5c}
	if w.Y != nil {
		j.Y = *w.Y
	}
	pub, err := j.PublicKey()
	if err != nil {
		return JWK{}, err
	}
	if tp := thumbprint(j.Kty, j.Crv, j.X, j.Y); j.Kid != tp {
		return bad("kid %q is not the key thumbprint %q", truncate(j.Kid, 64), tp)
	}
	alg, _ := AlgorithmFor(pub)
	if j.Alg != alg {
		return bad("alg %q does not fit the key (want %s)", truncate(j.Alg, 16), alg)
	}
	if w.Use != nil && *w.Use != "sig" {
		return bad("use must be \"sig\"")
	}
	for _, op := range w.KeyOps {
		if op != "verify" {
			return bad("key_ops may only hold \"verify\"")
		}
	}
	if len(w.X5c) > lim.MaxChain {
		return bad("x5c has %d certificates, limit %d", len(w.X5c), lim.MaxChain)
	}
	if w.X5c != nil {
		chain, err := j.Certificates()
		if err != nil {
			return JWK{}, err
		}
		if len(chain) == 0 {
			return bad("x5c is empty")
		}
		if w.X5tS256 != nil && *w.X5tS256 != CertThumbprint(chain[0]) {
			return bad("x5t#S256 is not the leaf's thumbprint")
		}
		if w.X5t != nil {
			sum := sha1.Sum(chain[0].Raw) // #nosec: RFC 7517 x5t is SHA-1; only compared
			if *w.X5t != b64.EncodeToString(sum[:]) {
				return bad("x5t is not the leaf's thumbprint")
			}
		}
	} else if w.X5t != nil || w.X5tS256 != nil {
		return bad("x5t without x5c")
	}
	return j, nil
}

// PublicKey decodes and checks the key members: EC P-256/P-384 with the point
// on the curve, or OKP Ed25519. Errors wrap ErrInvalidJWK.
func (j JWK) PublicKey() (crypto.PublicKey, error) {
	bad := func(format string, args ...any) (crypto.PublicKey, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidJWK, fmt.Sprintf(format, args...))
	}
	x, err := b64.DecodeString(j.X)
	if err != nil || !strictB64(j.X) {
		return bad("x is not base64url")
	}
	switch j.Kty {
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		default:
			return bad("unsupported EC curve %q", truncate(j.Crv, 16))
		}
		size := (curve.Params().BitSize + 7) / 8
		y, err := b64.DecodeString(j.Y)
		if err != nil || !strictB64(j.Y) {
			return bad("y is not base64url")
		}
		if len(x) != size || len(y) != size {
			return bad("EC coordinates must be %d bytes", size)
		}
		raw := make([]byte, 0, 1+2*size)
		raw = append(append(append(raw, 4), x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
		if err != nil {
			return bad("EC point is not on %s", j.Crv)
		}
		return pub, nil
	case "OKP":
		if j.Crv != "Ed25519" {
			return bad("unsupported OKP curve %q", truncate(j.Crv, 16))
		}
		if j.Y != "" {
			return bad("OKP key has y")
		}
		if len(x) != ed25519.PublicKeySize {
			return bad("Ed25519 key must be %d bytes", ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(x), nil
	}
	return bad("unsupported kty %q", truncate(j.Kty, 16))
}

// Certificates decodes x5c (standard base64 DER, leaf first) and checks that
// the leaf holds the key. Errors wrap ErrInvalidJWK.
func (j JWK) Certificates() ([]*x509.Certificate, error) {
	pub, err := j.PublicKey()
	if err != nil {
		return nil, err
	}
	chain := make([]*x509.Certificate, 0, len(j.X5c))
	for i, s := range j.X5c {
		der, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || strings.ContainsAny(s, "\r\n") {
			return nil, fmt.Errorf("%w: x5c[%d] is not base64", ErrInvalidJWK, i)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: x5c[%d]: %w", ErrInvalidJWK, i, err)
		}
		chain = append(chain, c)
	}
	if len(chain) > 0 && !samePublicKey(chain[0].PublicKey, pub) {
		return nil, fmt.Errorf("%w: the x5c leaf does not hold the key", ErrInvalidJWK)
	}
	return chain, nil
}

// strictB64 reports whether s holds only base64url characters (the decoder
// itself skips '\r' and '\n').
func strictB64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Encode returns the JWKS document with its keys sorted by kid, so that every
// server holding the same keys serves the same bytes (and the same ETag).
func (s JWKS) Encode() ([]byte, error) {
	keys := slices.Clone(s.Keys)
	if keys == nil {
		keys = []JWK{}
	}
	slices.SortFunc(keys, func(a, b JWK) int { return strings.Compare(a.Kid, b.Kid) })
	var buf bytes.Buffer
	enc := stdjson.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(JWKS{Keys: keys}); err != nil {
		return nil, fmt.Errorf("identity: encode JWKS: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Find returns the key with kid.
func (s JWKS) Find(kid string) (JWK, bool) {
	for _, k := range s.Keys {
		if k.Kid == kid {
			return k, true
		}
	}
	return JWK{}, false
}

// ETag returns a strong HTTP entity tag of a response body: the quoted
// base64url SHA-256 of the bytes. Serve it with the body from Encode.
func ETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + b64.EncodeToString(sum[:]) + `"`
}

// CertThumbprint returns the RFC 8705 x5t#S256 of a certificate: the
// base64url SHA-256 of its DER.
func CertThumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return b64.EncodeToString(sum[:])
}

// Discovery is an OpenID-style discovery document, served at
// /.well-known/openid-configuration so that third-party JWT libraries find
// the JWKS. Tokens are minted by nodes, so each token's iss is its node's
// SPIFFE ID, not Issuer.
type Discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

// NewDiscovery returns the discovery document of a server at issuer (an
// https URL) whose JWKS is at jwksURI.
func NewDiscovery(issuer, jwksURI string) Discovery {
	return Discovery{
		Issuer:                           issuer,
		JWKSURI:                          jwksURI,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{AlgES384, AlgES256, AlgEdDSA},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "principal", "cnf"},
	}
}

// constantTimeEqual compares two strings without leaking where they differ.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
