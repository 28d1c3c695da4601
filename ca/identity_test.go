package ca

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestValidateNetwork(t *testing.T) {
	good := []string{"mainnet.example.net", "localnet", "a", "a-b.c", "x1.y2.z3", strings.Repeat("a", 63) + ".net"}
	for _, n := range good {
		if err := ValidateNetwork(n); err != nil {
			t.Errorf("ValidateNetwork(%q) = %v, want nil", n, err)
		}
	}
	bad := []struct{ name, in, msg string }{
		{"empty", "", "empty"},
		{"upper", "MainNet.example.net", "upper-case"},
		{"empty label", "a..b", "empty label"},
		{"trailing dot", "a.b.", "empty label"},
		{"leading hyphen", "-a.b", "hyphen"},
		{"trailing hyphen", "a-.b", "hyphen"},
		{"underscore", "a_b.net", "not allowed"},
		{"slash", "a/b", "not allowed"},
		{"port", "a.net:443", "not allowed"},
		{"ip", "10.0.0.1", "all digits"},
		{"numeric tld", "host.123", "all digits"},
		{"long label", strings.Repeat("a", 64) + ".net", "63"},
		{"long name", strings.Repeat("abcdefghi.", 26) + "net", "253"},
		{"space", "a b", "not allowed"},
		{"unicode", "bücher.de", "not allowed"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateNetwork(tc.in)
			if !errors.Is(err, ErrNetwork) {
				t.Fatalf("ValidateNetwork(%q) = %v, want ErrNetwork", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"r1", "Node_7.a-b", "...", strings.Repeat("x", 128), "-"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", strings.Repeat("x", 129), "a/b", "a b", "a%2f", "é", "a\x00", "a:b", "a@b"} {
		if err := ValidateName(n); !errors.Is(err, ErrName) {
			t.Errorf("ValidateName(%q) = %v, want ErrName", n, err)
		}
	}
}

func TestParseIdentity(t *testing.T) {
	for _, s := range []string{"spiffe://mainnet.example.net/node/n1", "spiffe://a/root/r1", "spiffe://a/admin/ops"} {
		id, err := ParseIdentity(s)
		if err != nil {
			t.Fatalf("ParseIdentity(%q): %v", s, err)
		}
		if id.String() != s {
			t.Errorf("round trip %q -> %q", s, id.String())
		}
		if id.URI().String() != s {
			t.Errorf("URI %q", id.URI())
		}
	}
	bad := []string{
		"", "spiffe://", "spiffe://net", "spiffe://net/", "spiffe://net/node", "spiffe://net/node/",
		"spiffe://net/user/x", "spiffe://net/node/a/b", "SPIFFE://net/node/a", "spiffe://NET/node/a",
		"spiffe://net:8443/node/a", "spiffe://u@net/node/a", "spiffe://net/node/a?x=1", "spiffe://net/node/a#f",
		"spiffe://net/node/%61", "spiffe://net/node/..", "spiffe://net/node/.", "https://net/node/a",
		"spiffe:net/node/a", "spiffe://net//node/a", "spiffe://10.0.0.1/node/a", "spiffe://net/Node/a",
		"spiffe://net/node/" + strings.Repeat("a", 129), "spiffe://" + strings.Repeat("a", 600),
	}
	for _, s := range bad {
		if _, err := ParseIdentity(s); err == nil {
			t.Errorf("ParseIdentity(%q) accepted", s)
		} else if !errors.Is(err, ErrIdentity) && !errors.Is(err, ErrNetwork) && !errors.Is(err, ErrName) {
			t.Errorf("ParseIdentity(%q) = %v, not an identity error", s, err)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	mk := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	id, err := IdentityOf(mk("spiffe://net.example/node/n-1"))
	if err != nil || id != (Identity{"net.example", KindNode, "n-1"}) {
		t.Fatalf("IdentityOf = %v, %v", id, err)
	}
	bad := map[string]*x509.Certificate{
		"nil":            nil,
		"no uri":         mk(),
		"two uris":       mk("spiffe://net/node/a", "spiffe://net/node/b"),
		"spiffe + https": mk("spiffe://net/node/a", "https://example.com/"),
		"https":          mk("https://net/node/a"),
		"escaped":        mk("spiffe://net/node/a%2Fb"),
		"query":          mk("spiffe://net/node/a?"),
		"opaque":         mk("spiffe:net/node/a"),
	}
	for name, c := range bad {
		if _, err := IdentityOf(c); !errors.Is(err, ErrIdentity) && !errors.Is(err, ErrName) {
			t.Errorf("%s: IdentityOf = %v, want an identity error", name, err)
		}
	}
}
