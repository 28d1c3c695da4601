package agent

import (
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
)

// FuzzTrustFile: whatever trust.json holds, decoding it returns a document
// of our network with an index, or ErrTrustFile; it never panics.
func FuzzTrustFile(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"trust":{"index":3,"network":"agent.example","anchors":[],"revocations":[],"jwks":[],"nodes":[],"servers":[]}}`,
		`{"version":1,"trust":{"index":3,"network":"agent.example","jwks":[{"kid":"k","key":{"kty":"EC"},"node":"n","state":"active"}]}}`,
		`{"version":1,"trust":{"index":3,"network":"agent.example","revocations":[{"kind":"token","id":"j","time":"2030-01-01T00:00:00Z"}]}}`,
		`{"version":2}`, `{}`, `[]`, `null`, ``, `{"version":1,"trust":{"index":-1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := decodeTrustFile(b, "agent.example")
		if err != nil {
			if !errors.Is(err, ErrTrustFile) {
				t.Fatalf("error not ErrTrustFile: %v", err)
			}
			return
		}
		if doc.Network != "agent.example" || doc.Index == 0 {
			t.Fatalf("accepted %+v", doc)
		}
	})
}

// FuzzLocalRequest: request bodies of the local API decode strictly or are
// refused with an error; never a panic.
func FuzzLocalRequest(f *testing.F) {
	for _, s := range []string{
		`{"aud":"x"}`, `{"aud":["a","b"],"ttl":"10m","bind_cert":true,"principal":"NODE"}`,
		`{"token":"a.b.c","aud":"x","peer_cert":"-----BEGIN CERTIFICATE-----","require_binding":true}`,
		`{"aud":`, `{"aud":"x","aud":"y"}`, `{"AUD":"x"}`, `{"aud":"x"} {}`, "{\"aud\":\"\xff\"}", ``, `[]`, `{"aud":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MintRequest
		if err := decodeLocal(b, &m); err == nil && strings.TrimSpace(string(b)) == "" {
			t.Fatal("empty body accepted")
		}
		var v VerifyRequest
		_ = decodeLocal(b, &v)
	})
}

// TestDecodeLocal: what the local API's decoder takes and refuses.
func TestDecodeLocal(t *testing.T) {
	var m MintRequest
	if err := decodeLocal([]byte(`{"aud":["a","b"],"ttl":"1m","bind_cert":true}`), &m); err != nil ||
		len(m.Audience) != 2 || m.TTL != "1m" || !m.BindCert {
		t.Fatalf("%+v %v", m, err)
	}
	m = MintRequest{}
	if err := decodeLocal([]byte(` {"aud":"a"}`+"\n"), &m); err != nil || len(m.Audience) != 1 || m.Audience[0] != "a" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, bad := range []string{``, ` `, `{"aud":`, `{"aud":"a","x":1}`, `{"Aud":"a"}`, `{"aud":"a","aud":"b"}`,
		`{"aud":"a"}x`, `{"aud":{}}`, `{"aud":null,"ttl":5}`, "{\"aud\":\"\xc3\x28\"}", strings.Repeat(" ", MaxLocalBody+1)} {
		var m MintRequest
		if err := decodeLocal([]byte(bad), &m); err == nil {
			t.Errorf("accepted %.40q", bad)
		}
	}
}

// TestCredentialsFollowFiles: the minter follows node.key and node.pem; a
// half-done rotation (a new key, the old certificate) keeps the previous
// pair until the certificate for the new key is in place.
func TestCredentialsFollowFiles(t *testing.T) {
	now := time.Now()
	root, err := ca.NewRoot("creds.example", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	ikey, _ := ca.GenerateKey(ca.KeyP256, nil)
	icert, err := ca.SignIntermediate(root, ikey.Public(), "creds.example", "r1", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	issuer := ca.Signer{Cert: icert, Key: ikey}
	dir := t.TempDir()
	put := func(writeKey, writeCert bool) (crypto.Signer, *x509.Certificate) {
		t.Helper()
		k, _ := ca.GenerateKey(ca.KeyP384, nil)
		c, err := ca.SignNode(issuer, ca.NodeRequest{PublicKey: k.Public(), Network: "creds.example", NodeID: "n1", Now: now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if writeKey {
			if err := ca.WriteKeyFile(KeyPath(dir), k); err != nil {
				t.Fatal(err)
			}
		}
		if writeCert {
			if err := ca.WriteCertsFile(CertPath(dir), c, icert); err != nil {
				t.Fatal(err)
			}
		}
		return k, c
	}
	creds := newCredentials(dir, nil)
	if _, err := creds.current(); err == nil {
		t.Fatal("credentials from an empty directory")
	}
	_, c1 := put(true, true)
	n1, err := creds.current()
	if err != nil || !n1.leaf.Equal(c1) {
		t.Fatalf("first reading: %v", err)
	}
	if again, _ := creds.current(); again != n1 {
		t.Fatal("unchanged files read again")
	}
	k2, _ := put(true, false) // the key of a rotation, its certificate not yet
	if n, err := creds.current(); err != nil || n != n1 {
		t.Fatalf("half-done rotation: %v, changed %v", err, n != n1)
	}
	c2, err := ca.SignNode(issuer, ca.NodeRequest{PublicKey: k2.Public(), Network: "creds.example", NodeID: "n1", Now: now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteCertsFile(CertPath(dir), c2, icert); err != nil {
		t.Fatal(err)
	}
	n2, err := creds.current()
	if err != nil || !n2.leaf.Equal(c2) || n2.gen != n1.gen+1 || n2.minter.KID() == n1.minter.KID() {
		t.Fatalf("after the rotation: %v", err)
	}
	// Files gone: the last good pair stays.
	os.Remove(CertPath(dir))
	if n, err := creds.current(); err != nil || n != n2 {
		t.Fatalf("certificate file gone: %v", err)
	}
}

// goodKeyring is a keyring as a root answers it.
const goodKeyring = `{"network":"agent.example","index":7,"keys":[{"id":"a1","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","state":"primary","since":"2026-01-01T00:00:00Z"}]}`

// TestBadKeyrings: gossip.keys (or a root's answer) that is not a keyring
// of this network with one to four 32-byte keys, the primary first, is
// refused with ErrKeyringFile.
func TestBadKeyrings(t *testing.T) {
	if _, err := decodeKeyring([]byte(goodKeyring), "agent.example"); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]string{
		"empty":             ``,
		"not json":          `gossip`,
		"unknown field":     strings.Replace(goodKeyring, `"index"`, `"indx"`, 1),
		"another network":   strings.Replace(goodKeyring, "agent.example", "other.example", 1),
		"no keys":           `{"network":"agent.example","index":7,"keys":[]}`,
		"a short key":       strings.Replace(goodKeyring, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "AAAA", 1),
		"primary not first": `{"network":"agent.example","index":7,"keys":[{"id":"a1","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","state":"retiring","since":"2026-01-01T00:00:00Z"}]}`,
		"oversized":         strings.Repeat(" ", maxKeyringFile+1),
		"duplicate field":   strings.Replace(goodKeyring, `"index":7`, `"index":7,"index":8`, 1),
	} {
		if _, err := decodeKeyring([]byte(in), "agent.example"); !errors.Is(err, ErrKeyringFile) {
			t.Errorf("%s: %v, want ErrKeyringFile", name, err)
		}
	}
}

// FuzzKeyring: whatever gossip.keys holds, decoding it returns a keyring
// of our network, the primary first, every key 32 bytes, or
// ErrKeyringFile; it never panics.
func FuzzKeyring(f *testing.F) {
	for _, s := range []string{goodKeyring, `{}`, `[]`, `null`, ``, `{"network":"agent.example","index":1,"keys":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kr, err := decodeKeyring(b, "agent.example")
		if err != nil {
			if !errors.Is(err, ErrKeyringFile) {
				t.Fatalf("error not ErrKeyringFile: %v", err)
			}
			return
		}
		if kr.Network != "agent.example" || len(kr.Keys) == 0 || kr.Keys[0].State != "primary" {
			t.Fatalf("accepted %+v", kr)
		}
		for _, k := range kr.Keys {
			if len(k.Key) != 32 {
				t.Fatalf("accepted a key of %d bytes", len(k.Key))
			}
		}
	})
}
