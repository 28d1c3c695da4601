package identity

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// Kinds of SPIFFE IDs: the first path segment of spiffe://<network>/<kind>/<name>.
const (
	KindRoot  = "root"
	KindAdmin = "admin"
	KindNode  = "node"
)

const (
	maxSPIFFEIDLen = 512
	maxNameLen     = 128
)

// SPIFFEID is the identity in a keymesh certificate's URI SAN and in a token's
// iss/sub: spiffe://<network>/<kind>/<name>, where network is a lower-case
// hostname (the trust domain), kind is root, admin or node, and name is one
// path segment of letters, digits, '.', '-' or '_'.
//
// The ca package offers the same parse (ca.IdentityOf); identity keeps its own
// small copy so that it depends on nothing else of ours.
type SPIFFEID struct {
	Network string
	Kind    string
	Name    string
}

// String returns spiffe://<network>/<kind>/<name>.
func (id SPIFFEID) String() string {
	return "spiffe://" + id.Network + "/" + id.Kind + "/" + id.Name
}

// ParseSPIFFEID parses and checks a keymesh SPIFFE ID. Errors wrap ErrInvalidSPIFFEID.
func ParseSPIFFEID(s string) (SPIFFEID, error) {
	bad := func(why string) (SPIFFEID, error) {
		return SPIFFEID{}, fmt.Errorf("%w: %q: %s", ErrInvalidSPIFFEID, truncate(s, 80), why)
	}
	if len(s) > maxSPIFFEIDLen {
		return bad("too long")
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return bad("scheme must be spiffe://")
	}
	network, path, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no path")
	}
	if err := checkNetwork(network); err != nil {
		return bad(err.Error())
	}
	kind, name, ok := strings.Cut(path, "/")
	if !ok {
		return bad("path must be /<kind>/<name>")
	}
	switch kind {
	case KindRoot, KindAdmin, KindNode:
	default:
		return bad("kind must be root, admin or node")
	}
	if err := checkName(name); err != nil {
		return bad(err.Error())
	}
	return SPIFFEID{Network: network, Kind: kind, Name: name}, nil
}

// CheckNetwork reports whether network is a valid network name: a lower-case
// hostname of dot-separated labels (letters, digits, '-'), at most 253 bytes.
func CheckNetwork(network string) error {
	if err := checkNetwork(network); err != nil {
		return fmt.Errorf("%w: network %q: %s", ErrInvalidSPIFFEID, truncate(network, 80), err)
	}
	return nil
}

func checkNetwork(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("network must be 1..253 bytes")
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("network labels must be 1..63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("network labels must not start or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("network must be a lower-case hostname")
			}
		}
	}
	if last := h[strings.LastIndexByte(h, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("the last label of a network must not be all digits")
	}
	return nil
}

func checkName(n string) error {
	if n == "" || len(n) > maxNameLen {
		return fmt.Errorf("name must be 1..%d bytes", maxNameLen)
	}
	if n == "." || n == ".." {
		return fmt.Errorf("name must not be a dot segment")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("name may hold only letters, digits, '.', '-' and '_'")
		}
	}
	return nil
}

// SPIFFEIDOf returns the SPIFFE ID of a certificate: it must carry exactly
// one URI SAN, a keymesh SPIFFE ID in canonical form (the rules of
// ca.IdentityOf). Errors wrap ErrInvalidSPIFFEID.
func SPIFFEIDOf(cert *x509.Certificate) (SPIFFEID, error) {
	if cert == nil {
		return SPIFFEID{}, fmt.Errorf("%w: no certificate", ErrInvalidSPIFFEID)
	}
	if len(cert.URIs) != 1 {
		return SPIFFEID{}, fmt.Errorf("%w: certificate has %d URI SANs, want 1", ErrInvalidSPIFFEID, len(cert.URIs))
	}
	s := cert.URIs[0].String()
	id, err := ParseSPIFFEID(s)
	if err != nil {
		return SPIFFEID{}, err
	}
	if id.String() != s {
		return SPIFFEID{}, fmt.Errorf("%w: %q is not in canonical form", ErrInvalidSPIFFEID, truncate(s, 80))
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
