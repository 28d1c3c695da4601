package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
)

// KeyType names an allowed key algorithm.
type KeyType string

// The allowed key types. Nothing else is generated, parsed, sealed or
// certified: RSA of any size, P-224 and P-521 are refused with ErrKeyType.
const (
	KeyP256    KeyType = "p256"    // ECDSA on NIST P-256 (ES256)
	KeyP384    KeyType = "p384"    // ECDSA on NIST P-384 (ES384); the AS root's type
	KeyEd25519 KeyType = "ed25519" // Ed25519 (EdDSA)
)

// ParseKeyType parses a key type name as given on a command line.
func ParseKeyType(s string) (KeyType, error) {
	switch KeyType(s) {
	case KeyP256, KeyP384, KeyEd25519:
		return KeyType(s), nil
	}
	return "", fmt.Errorf("%w: unknown key type %q; use p256, p384 or ed25519", ErrKeyType, s)
}

// KeyTypeOf returns the type of a public key, or ErrKeyType with a
// description of the key when it is not allowed.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k != nil && k.Curve == elliptic.P256() {
			return KeyP256, nil
		}
		if k != nil && k.Curve == elliptic.P384() {
			return KeyP384, nil
		}
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return KeyEd25519, nil
		}
	}
	return "", fmt.Errorf("%w: got %s", ErrKeyType, describeKey(pub))
}

// describeKey names a public key for error messages, e.g. "RSA-1024".
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "RSA"
		}
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "ECDSA"
		}
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return fmt.Sprintf("Ed25519 key of %d bytes", len(k))
	case nil:
		return "no key"
	}
	return fmt.Sprintf("%T", pub)
}

func randOrDefault(rnd io.Reader) io.Reader {
	if rnd == nil {
		return rand.Reader
	}
	return rnd
}

// GenerateKey makes a new private key of type t. rnd nil means crypto/rand.
// For ECDSA, Go (1.26 and later) draws the key from its own secure source
// whatever rnd is; an Ed25519 key is derived from 32 bytes read from rnd.
func GenerateKey(t KeyType, rnd io.Reader) (crypto.Signer, error) {
	rnd = randOrDefault(rnd)
	switch t {
	case KeyP256:
		return ecdsa.GenerateKey(elliptic.P256(), rnd)
	case KeyP384:
		return ecdsa.GenerateKey(elliptic.P384(), rnd)
	case KeyEd25519:
		seed := make([]byte, ed25519.SeedSize)
		if _, err := io.ReadFull(rnd, seed); err != nil {
			return nil, fmt.Errorf("ca: reading randomness for an Ed25519 key: %w", err)
		}
		k := ed25519.NewKeyFromSeed(seed)
		clear(seed)
		return k, nil
	}
	return nil, fmt.Errorf("%w: unknown key type %q; use p256, p384 or ed25519", ErrKeyType, t)
}

// pemPrivateKey is the PEM block type of a PKCS#8 private key.
const pemPrivateKey = "PRIVATE KEY"

// MarshalKeyPEM encodes k as an unencrypted PKCS#8 "PRIVATE KEY" PEM block.
func MarshalKeyPEM(k crypto.Signer) ([]byte, error) {
	if k == nil {
		return nil, fmt.Errorf("%w: no key", ErrKeyType)
	}
	if _, err := KeyTypeOf(k.Public()); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding private key: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
	clear(der)
	return b, nil
}

// ParseKeyPEM parses one PKCS#8 "PRIVATE KEY" PEM block holding a key of an
// allowed type. Anything but white space around the block is refused.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%w: private key PEM is %d bytes, at most %d accepted", ErrTooLarge, len(b), maxSecretFile)
	}
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found; expected a PKCS#8 %q block", ErrPEM, pemPrivateKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: unexpected data after the private key block", ErrPEM)
	}
	if block.Type != pemPrivateKey {
		hint := ""
		if block.Type == "EC PRIVATE KEY" {
			hint = "; convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`"
		}
		return nil, fmt.Errorf("%w: found a %q block, expected a PKCS#8 %q block%s", ErrPEM, block.Type, pemPrivateKey, hint)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: private key block has headers (encrypted keys are not supported)", ErrPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %w", ErrPEM, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: got %T", ErrKeyType, k)
	}
	if _, err := KeyTypeOf(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// WriteKeyFile writes k to path as PKCS#8 PEM with mode 0600, atomically
// (a temporary file in the same directory, then rename). The key is never
// logged.
func WriteKeyFile(path string, k crypto.Signer) error {
	b, err := MarshalKeyPEM(k)
	if err != nil {
		return err
	}
	defer clear(b)
	return writeFileAtomic(path, b, 0o600)
}

// ReadKeyFile reads a private key written by WriteKeyFile. A file that group
// or others can read is refused with a *KeyFileModeError that says to run
// `chmod 600 PATH`.
func ReadKeyFile(path string) (crypto.Signer, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	k, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// publicKeysEqual reports whether two public keys are the same.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
