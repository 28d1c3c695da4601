package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// JWS algorithms keymesh signs and accepts. Nothing else is ever accepted:
// not "none", not HMAC (HS*), not RSA (RS*/PS*).
const (
	AlgES256 = "ES256" // ECDSA P-256 with SHA-256
	AlgES384 = "ES384" // ECDSA P-384 with SHA-384 (the default)
	AlgEdDSA = "EdDSA" // Ed25519
)

// b64 is the JWS base64url alphabet without padding, refusing non-zero trailing bits.
var b64 = base64.RawURLEncoding.Strict()

// AlgorithmFor returns the JWS algorithm of a public key: ES256 for P-256,
// ES384 for P-384, EdDSA for Ed25519. Other keys wrap ErrUnsupportedKey.
func AlgorithmFor(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "", fmt.Errorf("%w: empty ECDSA key", ErrUnsupportedKey)
		}
		switch k.Curve {
		case elliptic.P256():
			return AlgES256, nil
		case elliptic.P384():
			return AlgES384, nil
		}
		return "", fmt.Errorf("%w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("%w: Ed25519 key of %d bytes", ErrUnsupportedKey, len(k))
		}
		return AlgEdDSA, nil
	}
	return "", fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// allowedAlg reports whether alg is on the allow-list.
func allowedAlg(alg string) bool {
	return alg == AlgES256 || alg == AlgES384 || alg == AlgEdDSA
}

// ecSize is the byte width of r and s in a JWS ECDSA signature.
func ecSize(alg string) int {
	if alg == AlgES256 {
		return 32
	}
	return 48
}

// signJWS signs the JWS signing input with key under alg and returns the
// signature in JWS form (fixed-width r||s for ECDSA, RFC 7518 §3.4).
func signJWS(key crypto.Signer, alg string, rand io.Reader, input []byte) ([]byte, error) {
	switch alg {
	case AlgEdDSA:
		return key.Sign(rand, input, crypto.Hash(0))
	case AlgES256, AlgES384:
		var der []byte
		var err error
		if alg == AlgES256 {
			h := sha256.Sum256(input)
			der, err = signECDSA(key, rand, h[:], crypto.SHA256)
		} else {
			h := sha512.Sum384(input)
			der, err = signECDSA(key, rand, h[:], crypto.SHA384)
		}
		if err != nil {
			return nil, err
		}
		return asn1ToRS(der, ecSize(alg))
	}
	return nil, fmt.Errorf("%w: %s", ErrAlgNotAllowed, alg)
}

func signECDSA(key crypto.Signer, rand io.Reader, digest []byte, h crypto.Hash) ([]byte, error) {
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		return ecdsa.SignASN1(rand, k, digest)
	}
	return key.Sign(rand, digest, h)
}

// asn1ToRS converts an ASN.1 ECDSA-Sig-Value to fixed-width r||s.
func asn1ToRS(der []byte, size int) ([]byte, error) {
	var r, s cryptobyte.String
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, asn1.INTEGER) || !seq.ReadASN1(&s, asn1.INTEGER) || !seq.Empty() {
		return nil, fmt.Errorf("identity: signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 2*size)
	if !putUnsigned(out[:size], r) || !putUnsigned(out[size:], s) {
		return nil, fmt.Errorf("identity: signer returned an ECDSA signature out of range")
	}
	return out, nil
}

// putUnsigned writes the positive DER INTEGER content v right-aligned into dst.
func putUnsigned(dst []byte, v []byte) bool {
	if len(v) == 0 || v[0]&0x80 != 0 {
		return false
	}
	for len(v) > 0 && v[0] == 0 {
		v = v[1:]
	}
	if len(v) > len(dst) {
		return false
	}
	copy(dst[len(dst)-len(v):], v)
	return true
}

// rsToASN1 converts fixed-width r||s to an ASN.1 ECDSA-Sig-Value for
// ecdsa.VerifyASN1. It refuses a signature of the wrong width.
func rsToASN1(sig []byte, size int) ([]byte, bool) {
	if len(sig) != 2*size {
		return nil, false
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addUnsigned(b, sig[:size])
		addUnsigned(b, sig[size:])
	})
	out, err := b.Bytes()
	return out, err == nil
}

func addUnsigned(b *cryptobyte.Builder, v []byte) {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) {
		if v[0]&0x80 != 0 {
			b.AddUint8(0)
		}
		b.AddBytes(v)
	})
}

// verifyJWS checks a JWS signature over input with pub under alg. The caller
// has already checked that alg fits pub.
func verifyJWS(pub crypto.PublicKey, alg string, input, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		der, ok := rsToASN1(sig, ecSize(alg))
		if !ok {
			return false
		}
		if alg == AlgES256 {
			h := sha256.Sum256(input)
			return ecdsa.VerifyASN1(k, h[:], der)
		}
		h := sha512.Sum384(input)
		return ecdsa.VerifyASN1(k, h[:], der)
	case ed25519.PublicKey:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k, input, sig)
	}
	return false
}
