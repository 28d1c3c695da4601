package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		k, err := GenerateKey(kt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := KeyTypeOf(k.Public()); err != nil || got != kt {
			t.Errorf("KeyTypeOf = %s, %v; want %s", got, err, kt)
		}
		if p, err := ParseKeyType(string(kt)); err != nil || p != kt {
			t.Errorf("ParseKeyType(%s) = %s, %v", kt, p, err)
		}
	}
	// An Ed25519 key comes from the reader given.
	a, _ := GenerateKey(KeyEd25519, bytes.NewReader(make([]byte, 32)))
	b, _ := GenerateKey(KeyEd25519, bytes.NewReader(make([]byte, 32)))
	if !publicKeysEqual(a.Public(), b.Public()) {
		t.Errorf("Ed25519 key does not come from the reader")
	}
	if _, err := GenerateKey(KeyEd25519, bytes.NewReader(make([]byte, 31))); err == nil {
		t.Errorf("short randomness accepted")
	}
	for _, s := range []string{"", "rsa", "P256", "p521"} {
		if _, err := GenerateKey(KeyType(s), nil); !errors.Is(err, ErrKeyType) {
			t.Errorf("GenerateKey(%q) = %v", s, err)
		}
		if _, err := ParseKeyType(s); !errors.Is(err, ErrKeyType) {
			t.Errorf("ParseKeyType(%q) = %v", s, err)
		}
	}
}

func TestKeyPEM(t *testing.T) {
	for _, kt := range []KeyType{KeyP256, KeyP384, KeyEd25519} {
		k := mustKey(t, kt)
		b, err := MarshalKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----\n")) {
			t.Errorf("not PKCS#8 PEM: %.40q", b)
		}
		back, err := ParseKeyPEM(b)
		if err != nil {
			t.Fatal(err)
		}
		if !publicKeysEqual(back.Public(), k.Public()) {
			t.Errorf("%s: round trip changed the key", kt)
		}
	}
	r1024, _ := rsaKeys(t)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(r1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKCS8PrivateKey(p224)
	p256 := mustKey(t, KeyP256)
	good, _ := MarshalKeyPEM(p256)
	sec1, _ := x509.MarshalECPrivateKey(p256.(*ecdsa.PrivateKey))
	cases := []struct {
		name string
		in   []byte
		is   error
		msg  string
	}{
		{"empty", nil, ErrPEM, "no PEM block"},
		{"garbage", []byte("not a key"), ErrPEM, "no PEM block"},
		{"RSA", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), ErrKeyType, "RSA-1024"},
		{"P-224", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p224DER}), ErrKeyType, "P-224"},
		{"SEC1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ErrPEM, "openssl pkcs8 -topk8"},
		{"certificate", EncodeCertsPEM(newPKI(t, testNetwork, testNow).root.Cert), ErrPEM, "CERTIFICATE"},
		{"two keys", append(bytes.Clone(good), good...), ErrPEM, "unexpected data"},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}), ErrPEM, "headers"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x01, 0x00}}), ErrPEM, "private key"},
		{"oversized", bytes.Repeat([]byte{' '}, maxSecretFile+1), ErrTooLarge, "at most"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKeyPEM(tc.in)
			if k != nil || !errors.Is(err, tc.is) {
				t.Fatalf("ParseKeyPEM = %v, %v; want %v", k, err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
	if _, err := MarshalKeyPEM(nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("MarshalKeyPEM(nil) = %v", err)
	}
	if _, err := MarshalKeyPEM(p224); !errors.Is(err, ErrKeyType) {
		t.Errorf("MarshalKeyPEM(P-224) = %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	k := mustKey(t, KeyP384)
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	back, err := ReadKeyFile(path)
	if err != nil || !publicKeysEqual(back.Public(), k.Public()) {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	// Overwrite atomically; no temporary files are left behind.
	k2 := mustKey(t, KeyEd25519)
	if err := WriteKeyFile(path, k2); err != nil {
		t.Fatal(err)
	}
	if back, err := ReadKeyFile(path); err != nil || !publicKeysEqual(back.Public(), k2.Public()) {
		t.Fatalf("after overwrite: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(entries))
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadKeyFile(path)
		var me *KeyFileModeError
		if !errors.Is(err, ErrKeyFileMode) || !errors.As(err, &me) || me.Path != path {
			t.Fatalf("mode %04o: %v, want *KeyFileModeError", mode, err)
		}
		if want := "chmod 600 " + path; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(path); err != nil {
		t.Errorf("mode 0400 refused: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := ReadKeyFile(dir); err == nil {
		t.Errorf("directory accepted")
	}
	if err := WriteKeyFile(filepath.Join(dir, "no", "such", "dir"), k); err == nil {
		t.Errorf("write into a missing directory succeeded")
	}
	// A malformed key file names itself.
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(bad); !errors.Is(err, ErrPEM) || !strings.Contains(err.Error(), bad) {
		t.Errorf("malformed key file: %v", err)
	}
}

func TestCertsPEM(t *testing.T) {
	p := newPKI(t, testNetwork, testNow)
	node, _ := p.node(t, "n1", testNow)
	b := EncodeCertsPEM(node, nil, p.issuer.Cert, p.root.Cert)
	certs, err := ParseCertsPEM(b)
	if err != nil || len(certs) != 3 || !certs[0].Equal(node) || !certs[2].Equal(p.root.Cert) {
		t.Fatalf("round trip: %d certs, %v", len(certs), err)
	}
	if _, err := ParseCertsPEM(append(append([]byte("\n\n"), b...), "\n  \n"...)); err != nil {
		t.Errorf("surrounding white space refused: %v", err)
	}
	one := EncodeCertsPEM(node)
	broken := append([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n"), one...)
	cases := []struct {
		name string
		in   []byte
		is   error
		msg  string
	}{
		{"empty", nil, ErrPEM, "no CERTIFICATE"},
		{"white space", []byte(" \n\t"), ErrPEM, "no CERTIFICATE"},
		{"garbage", []byte("hello"), ErrPEM, "unexpected text"},
		{"text before", append([]byte("subject=CN=x\n"), one...), ErrPEM, "unexpected text"},
		{"text after", append(bytes.Clone(one), "trailer"...), ErrPEM, "certificate 2"},
		{"broken block skipped by pem", broken, ErrPEM, "not a complete PEM block"},
		{"key block", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), ErrPEM, "PRIVATE KEY"},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"a": "b"}, Bytes: node.Raw}), ErrPEM, "headers"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), ErrPEM, "certificate 1"},
		{"too many", bytes.Repeat(one, MaxBundleLen+1), ErrTooLarge, "more than"},
		{"too large", make([]byte, MaxPEMSize+1), ErrTooLarge, "at most"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := ParseCertsPEM(tc.in)
			if certs != nil || !errors.Is(err, tc.is) {
				t.Fatalf("ParseCertsPEM = %d certs, %v; want %v", len(certs), err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.pem")
	if err := WriteCertsFile(path, p.root.Cert, p.issuer.Cert); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode %04o", fi.Mode().Perm())
	}
	got, err := ReadCertsFile(path)
	if err != nil || len(got) != 2 || !got[1].Equal(p.issuer.Cert) {
		t.Fatalf("ReadCertsFile: %v", err)
	}
	if err := WriteCertsFile(path); err == nil {
		t.Errorf("writing no certificates succeeded")
	}
	if err := os.WriteFile(path, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCertsFile(path); !errors.Is(err, ErrPEM) || !strings.Contains(err.Error(), path) {
		t.Errorf("malformed bundle: %v", err)
	}
}
