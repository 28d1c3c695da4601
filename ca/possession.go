package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
)

// ErrPossession: a proof of possession does not verify against the key.
var ErrPossession = errors.New("ca: proof of possession does not verify")

// possessionDigest is what a proof of possession signs: a domain-separated
// message hashed as the key's signature algorithm wants it (SHA-256 for
// P-256, SHA-384 for P-384, the message itself for Ed25519).
func possessionDigest(pub crypto.PublicKey, context string, parts ...string) ([]byte, crypto.Hash, error) {
	msg := []byte("keymesh proof of possession\x00" + context)
	for _, p := range parts {
		msg = append(msg, 0)
		msg = append(msg, p...)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			sum := sha256.Sum256(msg)
			return sum[:], crypto.SHA256, nil
		case elliptic.P384():
			sum := sha512.Sum384(msg)
			return sum[:], crypto.SHA384, nil
		}
	case ed25519.PublicKey:
		return msg, crypto.Hash(0), nil
	}
	return nil, 0, fmt.Errorf("%w: %T", ErrKeyType, pub)
}

// SignPossession proves that the holder of key asks for context and parts
// (for example "collect", a registration id and a time). rnd nil means
// crypto/rand.
func SignPossession(key crypto.Signer, rnd io.Reader, context string, parts ...string) ([]byte, error) {
	digest, h, err := possessionDigest(key.Public(), context, parts...)
	if err != nil {
		return nil, err
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return key.Sign(rnd, digest, h)
}

// VerifyPossession checks a proof made by SignPossession with the same
// context and parts.
func VerifyPossession(pub crypto.PublicKey, sig []byte, context string, parts ...string) error {
	digest, _, err := possessionDigest(pub, context, parts...)
	if err != nil {
		return err
	}
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest, sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, digest, sig)
	}
	if !ok {
		return ErrPossession
	}
	return nil
}
