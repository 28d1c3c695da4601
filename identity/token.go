package identity

import (
	"fmt"
	"strings"

	"github.com/go-json-experiment/json"
)

// DefaultMaxTokenSize bounds the length of a compact token (8 KiB).
const DefaultMaxTokenSize = 8 << 10

// header is the JOSE header keymesh emits and accepts: alg and kid required,
// typ optional ("JWT"). Any other member (crit, jwk, jku, x5u, x5c, b64, ...)
// is refused.
type header struct {
	Alg string  `json:"alg"`
	Kid string  `json:"kid"`
	Typ *string `json:"typ,omitempty"`
}

// Token is a compact JWS parsed strictly but not verified.
type Token struct {
	Alg    string
	KID    string
	Claims Claims
}

// compactJWS is the parsed compact form before the claims are decoded.
type compactJWS struct {
	alg, kid  string
	input     string // header "." payload: the JWS signing input
	payload   []byte // decoded, not yet parsed
	signature []byte
}

// ParseUnverified parses a compact token strictly without verifying anything
// but its form: three base64url parts (no padding, no other characters), a
// header of exactly alg, kid and optional typ "JWT", and strict claims JSON.
// It is for tools that show a token; use a Verifier to trust one. Errors wrap
// ErrTooLarge, ErrMalformed or ErrClaims.
func ParseUnverified(token string, maxSize int) (Token, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxTokenSize
	}
	if len(token) > maxSize {
		return Token{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(token), maxSize)
	}
	j, err := parseCompact(token)
	if err != nil {
		return Token{}, err
	}
	c, err := j.claims()
	if err != nil {
		return Token{}, err
	}
	return Token{Alg: j.alg, KID: j.kid, Claims: c}, nil
}

// parseCompact splits and checks the compact form and decodes the header and
// signature. The claims are decoded by claims(), after the signature check.
func parseCompact(token string) (compactJWS, error) {
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return compactJWS{}, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return compactJWS{}, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	// An empty signature is let through to be refused by the alg allow-list
	// ("none") or the signature check, which give the clearer reason.
	if h == "" || p == "" || !strictB64(h) || !strictB64(p) || !strictB64(s) {
		return compactJWS{}, fmt.Errorf("%w: parts must be base64url without padding", ErrMalformed)
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return compactJWS{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var hd header
	if err := json.Unmarshal(hb, &hd, json.RejectUnknownMembers(true)); err != nil {
		return compactJWS{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if hd.Alg == "" || hd.Kid == "" {
		return compactJWS{}, fmt.Errorf("%w: header needs alg and kid", ErrMalformed)
	}
	if hd.Typ != nil && !strings.EqualFold(*hd.Typ, "JWT") {
		return compactJWS{}, fmt.Errorf("%w: typ must be JWT", ErrMalformed)
	}
	sig, err := b64.DecodeString(s)
	if err != nil {
		return compactJWS{}, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	if len(hd.Kid) > maxKIDLen {
		return compactJWS{}, fmt.Errorf("%w: kid longer than %d", ErrMalformed, maxKIDLen)
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return compactJWS{}, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return compactJWS{alg: hd.Alg, kid: hd.Kid, input: token[:len(h)+1+len(p)], payload: pb, signature: sig}, nil
}

const maxKIDLen = 128

// claims decodes and checks the claims. Errors wrap ErrClaims.
func (j *compactJWS) claims() (Claims, error) { return parseClaims(j.payload) }
