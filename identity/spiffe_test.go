package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseSPIFFEID(t *testing.T) {
	good := []struct {
		in   string
		want SPIFFEID
	}{
		{"spiffe://mainnet.example.net/node/r1", SPIFFEID{"mainnet.example.net", KindNode, "r1"}},
		{"spiffe://a/admin/system", SPIFFEID{"a", KindAdmin, "system"}},
		{"spiffe://x-1.y/root/Root_A.b-c", SPIFFEID{"x-1.y", KindRoot, "Root_A.b-c"}},
	}
	for _, tc := range good {
		got, err := ParseSPIFFEID(tc.in)
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Fatalf("%s: %+v, %v", tc.in, got, err)
		}
	}
	bad := []string{
		"", "spiffe://", "spiffe://net", "spiffe://net/", "spiffe://net/node", "spiffe://net/node/",
		"spiffe://net/node/a/b", "spiffe://net/user/a", "SPIFFE://net/node/a", "https://net/node/a",
		"spiffe://Net/node/a", "spiffe://net:443/node/a", "spiffe://u@net/node/a", "spiffe://net/node/a?q",
		"spiffe://net/node/a#f", "spiffe://net/node/a%20b", "spiffe://net/node/..", "spiffe://net/node/.",
		"spiffe://-net/node/a", "spiffe://net-/node/a", "spiffe://a..b/node/a", "spiffe://net_x/node/a",
		"spiffe://10.0.0.1/node/a", "spiffe://net/node/" + strings.Repeat("a", 129),
		"spiffe://" + strings.Repeat("a", 64) + "/node/a", "spiffe://net/node/a\x00",
	}
	for _, in := range bad {
		if _, err := ParseSPIFFEID(in); !errors.Is(err, ErrInvalidSPIFFEID) {
			t.Errorf("%q: err = %v", in, err)
		}
	}
}

func TestSPIFFEIDOf(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	if _, err := SPIFFEIDOf(nil); err == nil {
		t.Fatal("nil cert")
	}
	for _, uris := range [][]*url.URL{
		nil,
		{u("spiffe://a.b/node/x"), u("spiffe://a.b/node/y")},
		{u("spiffe://a.b/node/x"), u("https://a.b/")},
		{u("spiffe://A.b/node/x")},
	} {
		if _, err := SPIFFEIDOf(&x509.Certificate{URIs: uris}); !errors.Is(err, ErrInvalidSPIFFEID) {
			t.Errorf("%v: err = %v", uris, err)
		}
	}
	id, err := SPIFFEIDOf(&x509.Certificate{URIs: []*url.URL{u("spiffe://a.b/node/x")}})
	if err != nil || id.Name != "x" {
		t.Fatal(id, err)
	}
}
