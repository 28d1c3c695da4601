package ca

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// Kind is the kind of principal an identity names; it is the first path
// segment of the SPIFFE ID.
type Kind string

// The kinds of identity keymesh issues certificates for.
const (
	KindRoot  Kind = "root"  // a root server (issuing intermediate and TLS certificate)
	KindAdmin Kind = "admin" // an operator credential
	KindNode  Kind = "node"  // a mesh node
)

func (k Kind) valid() bool { return k == KindRoot || k == KindAdmin || k == KindNode }

// MaxNameLen is the longest root server name, admin name or node id.
const MaxNameLen = 128

// Identity is the keymesh identity carried in a certificate's URI SAN:
// spiffe://<network>/<kind>/<name>.
type Identity struct {
	Network string // the trust domain, a host name such as mainnet.example.net
	Kind    Kind
	Name    string // root server name, admin name or node id
}

// URI returns the SPIFFE ID of id. It does not validate id; see Validate.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.Network, Path: "/" + string(id.Kind) + "/" + id.Name}
}

// String returns the SPIFFE ID of id as text.
func (id Identity) String() string { return id.URI().String() }

// Validate reports whether every field of id is well-formed.
func (id Identity) Validate() error {
	if err := ValidateNetwork(id.Network); err != nil {
		return err
	}
	if !id.Kind.valid() {
		return fmt.Errorf("%w: kind %q is not one of root, admin, node", ErrIdentity, id.Kind)
	}
	return ValidateName(id.Name)
}

// ParseIdentity parses a SPIFFE ID of the form spiffe://<network>/<kind>/<name>.
// Only the canonical spelling is accepted: no port, user, query, fragment,
// percent-encoding, upper-case scheme or host, or extra path segments.
func ParseIdentity(s string) (Identity, error) {
	if len(s) > 512 {
		return Identity{}, fmt.Errorf("%w: SPIFFE ID longer than 512 bytes", ErrIdentity)
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q does not start with spiffe://", ErrIdentity, s)
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q has no path; want spiffe://<network>/<root|admin|node>/<name>", ErrIdentity, s)
	}
	kind, name, ok := strings.Cut(path, "/")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q has one path segment; want spiffe://<network>/<root|admin|node>/<name>", ErrIdentity, s)
	}
	id := Identity{Network: host, Kind: Kind(kind), Name: name}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: in %q: %w", ErrIdentity, s, err)
	}
	// The checks above leave only [a-z0-9.-] in the host and [A-Za-z0-9._-]
	// in the path, so the text is already canonical; compare to be sure.
	if id.String() != s {
		return Identity{}, fmt.Errorf("%w: %q is not in canonical form", ErrIdentity, s)
	}
	return id, nil
}

// IdentityOf returns the identity in cert's URI SAN. The certificate must
// carry exactly one URI SAN, and it must be a well-formed keymesh SPIFFE ID.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrIdentity)
	}
	if n := len(cert.URIs); n != 1 {
		return Identity{}, fmt.Errorf("%w: certificate %q has %d URI SANs, want exactly one spiffe:// ID", ErrIdentity, cert.Subject.CommonName, n)
	}
	u := cert.URIs[0]
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
		return Identity{}, fmt.Errorf("%w: URI SAN %q is not a plain SPIFFE ID", ErrIdentity, u.String())
	}
	return ParseIdentity(u.String())
}

// ValidateNetwork reports whether name is a valid network name: a host name
// in lower case (labels of 1 to 63 letters, digits and inner hyphens,
// separated by dots, 253 bytes at most) whose last label is not all digits.
func ValidateNetwork(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty; use a host name such as mainnet.example.net", ErrNetwork)
	}
	if err := validateHostname(name, false); err != nil {
		return fmt.Errorf("%w %q: %s; use a lower-case host name such as mainnet.example.net", ErrNetwork, name, err.Error())
	}
	return nil
}

// ValidateName reports whether name is a valid root server name, admin name
// or node id: 1 to 128 of [A-Za-z0-9._-], and not "." or "..".
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty; use 1 to %d of A-Z a-z 0-9 . _ -", ErrName, MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes long, at most %d allowed", ErrName, len(name), MaxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %q is a path segment, not a name", ErrName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q has a %q at byte %d; use only A-Z a-z 0-9 . _ -", ErrName, name, rune(c), i)
		}
	}
	return nil
}

// ValidateNodeID reports whether id is a valid node id: a name as
// ValidateName allows, in lower case only (1 to 128 of [a-z0-9._-]), so
// that one node cannot appear under two spellings.
func ValidateNodeID(id string) error {
	if err := ValidateName(id); err != nil {
		return err
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%w: node id %q has an upper-case %q at byte %d; node ids are lower-case (use %q)", ErrName, id, rune(c), i, strings.ToLower(id))
		}
	}
	return nil
}

// validateHostname checks DNS host name syntax. With allowUpper, upper-case
// letters are accepted (DNS SANs compare case-insensitively).
func validateHostname(name string, allowUpper bool) error {
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 bytes")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if l == "" {
			return fmt.Errorf("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %d is longer than 63 bytes", i+1)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			case allowUpper && c >= 'A' && c <= 'Z':
			case c >= 'A' && c <= 'Z':
				return fmt.Errorf("upper-case letter %q", rune(c))
			default:
				return fmt.Errorf("character %q not allowed", rune(c))
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("last label %q is all digits, which reads as an IP address", last)
	}
	return nil
}
