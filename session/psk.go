package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// A pre-shared key adds to mutual TLS (never replaces it): both peers hold
// the same secret in a file (mode 0600), its id travels in the OPEN, and
// the OPEN carries HMAC-SHA256 under the secret over the TLS connection's
// exported keying material (RFC 8446 section 7.5) and the OPEN itself
// without the MAC, so the MAC proves the secret and this very channel.

// PSK is a pre-shared key.
type PSK struct {
	// ID names the key in the OPEN: the first 16 hex digits of SHA-256
	// over a label and the secret, the same on both sides.
	ID     string
	secret []byte
}

// MinPSKBytes is the least secret a pre-shared key may have.
const MinPSKBytes = 32

// ErrPSKFile: a pre-shared key file is unusable.
var ErrPSKFile = errors.New("session: pre-shared key file unusable")

// NewPSK makes a PSK of secret (at least MinPSKBytes).
func NewPSK(secret []byte) (*PSK, error) {
	if len(secret) < MinPSKBytes {
		return nil, fmt.Errorf("%w: a secret of %d bytes, at least %d", ErrPSKFile, len(secret), MinPSKBytes)
	}
	sum := sha256.Sum256(append([]byte("keymesh-psk-id/1\x00"), secret...))
	return &PSK{ID: hex.EncodeToString(sum[:8]), secret: append([]byte(nil), secret...)}, nil
}

// LoadPSK reads a pre-shared key file: the secret as hex digits (at least
// 64, e.g. from `openssl rand -hex 32`), mode 0600 or stricter.
func LoadPSK(path string) (*PSK, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPSKFile, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is mode %04o, readable by others; run chmod 600 %s", ErrPSKFile, path, fi.Mode().Perm(), path)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrPSKFile, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPSKFile, err)
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("%w: %s is %d bytes, a key file has one line of hex digits", ErrPSKFile, path, len(b))
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not hold hex digits: %w", ErrPSKFile, path, err)
	}
	return NewPSK(secret)
}

// ekmLabel is the exporter label of the keying material a PSK MAC covers.
const ekmLabel = "EXPORTER-keymesh-peer-psk"

// pskMAC is the MAC of o (its PSKMAC ignored) on the connection cs.
func (k *PSK) pskMAC(cs tls.ConnectionState, o Open) ([]byte, error) {
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("session: exported keying material: %w", err)
	}
	o.PSKMAC = nil
	body, err := Encode(o)
	if err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, k.secret)
	h.Write([]byte("keymesh-psk/1\x00"))
	h.Write(ekm)
	h.Write(body)
	return h.Sum(nil), nil
}

// checkPSK checks the PSK part of a received OPEN against want (the key
// configured for the peer, nil for none).
func checkPSK(want *PSK, cs tls.ConnectionState, o Open) *Notification {
	switch {
	case want == nil && o.PSKID == "":
		return nil
	case want == nil:
		n := notification(CodeOpen, SubOpenPSK, "pre-shared key %s offered, none is configured for this peer", o.PSKID)
		return &n
	case o.PSKID == "":
		n := notification(CodeOpen, SubOpenPSK, "this peer needs pre-shared key %s", want.ID)
		return &n
	case o.PSKID != want.ID:
		n := notification(CodeOpen, SubOpenPSK, "pre-shared key %s is not the one configured (%s)", o.PSKID, want.ID)
		return &n
	}
	mac, err := want.pskMAC(cs, o)
	if err != nil || !hmac.Equal(mac, o.PSKMAC) {
		n := notification(CodeOpen, SubOpenPSK, "the pre-shared key MAC does not verify on this connection")
		return &n
	}
	return nil
}
