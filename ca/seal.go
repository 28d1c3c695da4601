package ca

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
)

// SealKeySize is the size of a seal key: AES-256.
const SealKeySize = 32

// Sealed data is sealVersion, a 12-byte random nonce, and the AES-256-GCM
// ciphertext with its tag. The version byte is authenticated with the aad.
const (
	sealVersion  = 1
	sealNonceLen = 12
	sealOverhead = 1 + sealNonceLen + 16
	// MaxSealed is the largest sealed blob Open accepts.
	MaxSealed = 1 << 20
)

// NewSealKey returns a new random 32-byte seal key. rnd nil means crypto/rand.
func NewSealKey(rnd io.Reader) ([]byte, error) {
	k := make([]byte, SealKeySize)
	if _, err := io.ReadFull(randOrDefault(rnd), k); err != nil {
		return nil, fmt.Errorf("ca: reading randomness for a seal key: %w", err)
	}
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != SealKeySize {
		return nil, fmt.Errorf("%w, got %d; use the key made by `keymesh root bootstrap`", ErrSealKey, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("ca: seal: %w", err)
	}
	return cipher.NewGCM(block)
}

func sealAAD(aad []byte) []byte {
	return append([]byte{sealVersion}, aad...)
}

// Seal encrypts plaintext under key with AES-256-GCM and a random nonce;
// aad is authenticated, not stored: Open needs the same aad. rnd nil means
// crypto/rand.
func Seal(key, plaintext, aad []byte, rnd io.Reader) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(plaintext) > MaxSealed-sealOverhead {
		return nil, fmt.Errorf("%w: %d bytes to seal", ErrTooLarge, len(plaintext))
	}
	out := make([]byte, 1+sealNonceLen, sealOverhead+len(plaintext))
	out[0] = sealVersion
	if _, err := io.ReadFull(randOrDefault(rnd), out[1:]); err != nil {
		return nil, fmt.Errorf("ca: reading randomness for a nonce: %w", err)
	}
	return gcm.Seal(out, out[1:], plaintext, sealAAD(aad)), nil
}

// Open decrypts data made by Seal. A wrong key, a wrong aad, or any change
// to the data gives ErrSealed; a key of the wrong size gives ErrSealKey.
func Open(key, sealed, aad []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) > MaxSealed {
		return nil, fmt.Errorf("%w: sealed data of %d bytes", ErrTooLarge, len(sealed))
	}
	if len(sealed) < sealOverhead || sealed[0] != sealVersion {
		return nil, ErrSealed
	}
	pt, err := gcm.Open(nil, sealed[1:1+sealNonceLen], sealed[1+sealNonceLen:], sealAAD(aad))
	if err != nil {
		return nil, ErrSealed
	}
	return pt, nil
}

// WriteSealKeyFile writes key to path as 64 hex digits and a newline, mode
// 0600, atomically.
func WriteSealKeyFile(path string, key []byte) error {
	if len(key) != SealKeySize {
		return fmt.Errorf("%w, got %d", ErrSealKey, len(key))
	}
	b := make([]byte, 0, 2*SealKeySize+1)
	b = hex.AppendEncode(b, key)
	b = append(b, '\n')
	defer clear(b)
	return writeFileAtomic(path, b, 0o600)
}

// ReadSealKeyFile reads a seal key file written by WriteSealKeyFile,
// refusing one that group or others can read (*KeyFileModeError).
func ReadSealKeyFile(path string) ([]byte, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	t := bytes.TrimSpace(b)
	if len(t) != 2*SealKeySize {
		return nil, fmt.Errorf("%w: %s does not hold 64 hex digits", ErrSealKey, path)
	}
	key := make([]byte, SealKeySize)
	if _, err := hex.Decode(key, t); err != nil {
		return nil, fmt.Errorf("%w: %s does not hold 64 hex digits", ErrSealKey, path)
	}
	return key, nil
}

// signerAAD binds a sealed root key to its network.
func signerAAD(network string) []byte {
	return []byte("keymesh/root-key/v1\x00" + network)
}

// SealSigner seals a private key (PKCS#8) under key, bound to network: it
// opens only with the same seal key and network name.
func SealSigner(key []byte, s crypto.Signer, network string, rnd io.Reader) ([]byte, error) {
	if err := ValidateNetwork(network); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%w: no key", ErrKeyType)
	}
	if _, err := KeyTypeOf(s.Public()); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding private key: %w", err)
	}
	defer clear(der)
	return Seal(key, der, signerAAD(network), rnd)
}

// OpenSigner opens a key sealed by SealSigner for the same network.
func OpenSigner(key, sealed []byte, network string) (crypto.Signer, error) {
	der, err := Open(key, sealed, signerAAD(network))
	if err != nil {
		return nil, err
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sealed key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: sealed key is a %T", ErrKeyType, k)
	}
	if _, err := KeyTypeOf(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}
