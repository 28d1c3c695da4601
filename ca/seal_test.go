package ca

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	key, err := NewSealKey(nil)
	if err != nil || len(key) != 32 {
		t.Fatalf("NewSealKey: %d bytes, %v", len(key), err)
	}
	aad := []byte("mainnet.example.net")
	for _, pt := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("root key "), 1000)} {
		s, err := Seal(key, pt, aad, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != len(pt)+sealOverhead {
			t.Errorf("sealed %d bytes to %d", len(pt), len(s))
		}
		if len(pt) > 8 && bytes.Contains(s, pt[:8]) {
			t.Errorf("plaintext visible in sealed data")
		}
		back, err := Open(key, s, aad)
		if err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("Open: %v", err)
		}
	}
	// Random nonces: the same plaintext seals differently.
	a, _ := Seal(key, []byte("same"), aad, nil)
	b, _ := Seal(key, []byte("same"), aad, nil)
	if bytes.Equal(a, b) {
		t.Errorf("two seals of the same plaintext are equal")
	}

	sealed, _ := Seal(key, []byte("the AS root key"), aad, nil)
	other, _ := NewSealKey(nil)
	if _, err := Open(other, sealed, aad); !errors.Is(err, ErrSealed) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := Open(key, sealed, []byte("other.example.net")); !errors.Is(err, ErrSealed) {
		t.Errorf("wrong aad: %v", err)
	}
	if _, err := Open(key, sealed, nil); !errors.Is(err, ErrSealed) {
		t.Errorf("missing aad: %v", err)
	}
	for i := range sealed {
		tampered := bytes.Clone(sealed)
		tampered[i] ^= 0x80
		if _, err := Open(key, tampered, aad); !errors.Is(err, ErrSealed) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for _, s := range [][]byte{nil, sealed[:sealOverhead-1], sealed[:len(sealed)-1], append(bytes.Clone(sealed), 0)} {
		if _, err := Open(key, s, aad); !errors.Is(err, ErrSealed) {
			t.Errorf("Open(%d bytes) = %v", len(s), err)
		}
	}
	for _, k := range [][]byte{nil, make([]byte, 16), make([]byte, 31), make([]byte, 33)} {
		if _, err := Seal(k, []byte("x"), nil, nil); !errors.Is(err, ErrSealKey) {
			t.Errorf("Seal with %d-byte key: %v", len(k), err)
		}
		if _, err := Open(k, sealed, aad); !errors.Is(err, ErrSealKey) {
			t.Errorf("Open with %d-byte key: %v", len(k), err)
		}
	}
	if _, err := Open(key, make([]byte, MaxSealed+1), aad); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if _, err := Seal(key, []byte("x"), nil, bytes.NewReader(nil)); err == nil {
		t.Errorf("seal without randomness succeeded")
	}
}

func TestSealSigner(t *testing.T) {
	key, _ := NewSealKey(nil)
	root, err := NewRoot(testNetwork, testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealSigner(key, root.Key, testNetwork, nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := OpenSigner(key, sealed, testNetwork)
	if err != nil || !publicKeysEqual(back.Public(), root.Key.Public()) {
		t.Fatalf("OpenSigner: %v", err)
	}
	// The unsealed key signs as the root.
	if _, err := SignIntermediate(Signer{Cert: root.Cert, Key: back}, mustKey(t, KeyP256).Public(), testNetwork, "r2", testNow, nil); err != nil {
		t.Errorf("sign with unsealed root: %v", err)
	}
	if _, err := OpenSigner(key, sealed, "other.example.net"); !errors.Is(err, ErrSealed) {
		t.Errorf("other network: %v", err)
	}
	wrong, _ := NewSealKey(nil)
	if _, err := OpenSigner(wrong, sealed, testNetwork); !errors.Is(err, ErrSealed) {
		t.Errorf("wrong key: %v", err)
	}
	// Plain Seal of a PKCS#8 key under the same aad text is still bound to
	// the purpose: sealing arbitrary bytes cannot be opened as a signer.
	junk, _ := Seal(key, []byte("junk"), signerAAD(testNetwork), nil)
	if _, err := OpenSigner(key, junk, testNetwork); err == nil {
		t.Errorf("junk opened as a signer")
	}
	if _, err := SealSigner(key, root.Key, "Bad Net", nil); !errors.Is(err, ErrNetwork) {
		t.Errorf("bad network: %v", err)
	}
	if _, err := SealSigner(key, nil, testNetwork, nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("nil signer: %v", err)
	}
}

func TestSealKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seal.key")
	key, _ := NewSealKey(nil)
	if err := WriteSealKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("seal key file mode %04o", fi.Mode().Perm())
	}
	back, err := ReadSealKeyFile(path)
	if err != nil || !bytes.Equal(back, key) {
		t.Fatalf("ReadSealKeyFile: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSealKeyFile(path); !errors.Is(err, ErrKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Errorf("0644 seal key: %v", err)
	}
	if err := WriteSealKeyFile(path, key[:16]); !errors.Is(err, ErrSealKey) {
		t.Errorf("short key written: %v", err)
	}
	for name, content := range map[string]string{"short": "abcd\n", "not hex": strings.Repeat("zz", 32), "long": strings.Repeat("00", 33)} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSealKeyFile(p); !errors.Is(err, ErrSealKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
