package agent

import (
	"errors"
	"strings"
	"testing"
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
