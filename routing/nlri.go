package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// NLRI is what a route reaches: an IPv4 or IPv6 prefix, or a service name
// of the mesh. Its text form is the canonical CIDR of the prefix
// (10.1.0.0/24, 2001:db8::/32) or "service:" and the name
// (service:web.prod); the wire carries the text form, and a decoder takes
// only the canonical one.
type NLRI struct {
	prefix  netip.Prefix
	service string
}

// ServicePrefix starts the text form of a service NLRI.
const ServicePrefix = "service:"

// MaxServiceLen bounds a service name.
const MaxServiceLen = 128

// ErrNLRI: a prefix or service name that is not in its canonical form.
var ErrNLRI = errors.New("routing: bad NLRI")

// ParseNLRI reads the text form of an NLRI. A prefix must be masked
// (10.1.0.0/24, not 10.1.0.1/24) and an IPv4 prefix written as such (not
// IPv4-mapped IPv6); a service name is lower-case letters, digits, '-',
// '.' and '_', starting with a letter or digit.
func ParseNLRI(s string) (NLRI, error) {
	if name, ok := strings.CutPrefix(s, ServicePrefix); ok {
		if err := checkService(name); err != nil {
			return NLRI{}, err
		}
		return NLRI{service: name}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return NLRI{}, fmt.Errorf("%w: %q is neither a prefix (10.1.0.0/24) nor %sNAME", ErrNLRI, trunc(s), ServicePrefix)
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return NLRI{}, fmt.Errorf("%w: %q: write IPv4 prefixes as such, without zones", ErrNLRI, trunc(s))
	}
	if p.Masked() != p {
		return NLRI{}, fmt.Errorf("%w: %q has host bits set; the prefix is %s", ErrNLRI, trunc(s), p.Masked())
	}
	return NLRI{prefix: p}, nil
}

// PrefixNLRI is the NLRI of a prefix (masked).
func PrefixNLRI(p netip.Prefix) NLRI { return NLRI{prefix: p.Masked()} }

// MustNLRI is ParseNLRI for constants; it panics on an error.
func MustNLRI(s string) NLRI {
	n, err := ParseNLRI(s)
	if err != nil {
		panic(err)
	}
	return n
}

func checkService(name string) error {
	if name == "" || len(name) > MaxServiceLen {
		return fmt.Errorf("%w: a service name is 1 to %d bytes", ErrNLRI, MaxServiceLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '.' || c == '_') && i > 0:
		default:
			return fmt.Errorf("%w: service name %q: lower-case letters, digits, '-', '.' and '_', starting with a letter or digit", ErrNLRI, trunc(name))
		}
	}
	return nil
}

// Prefix is the NLRI's prefix; ok is false for a service.
func (n NLRI) Prefix() (p netip.Prefix, ok bool) { return n.prefix, n.prefix.IsValid() }

// Service is the NLRI's service name; "" for a prefix.
func (n NLRI) Service() string { return n.service }

// IsZero reports whether n is the zero NLRI (neither).
func (n NLRI) IsZero() bool { return !n.prefix.IsValid() && n.service == "" }

func (n NLRI) String() string {
	if n.service != "" {
		return ServicePrefix + n.service
	}
	if !n.prefix.IsValid() {
		return ""
	}
	return n.prefix.String()
}

// MarshalText and UnmarshalText make the text form the JSON and CBOR
// form.
func (n NLRI) MarshalText() ([]byte, error) {
	if n.IsZero() {
		return nil, fmt.Errorf("%w: empty", ErrNLRI)
	}
	return []byte(n.String()), nil
}

func (n *NLRI) UnmarshalText(b []byte) error {
	v, err := ParseNLRI(string(b))
	if err != nil {
		return err
	}
	*n = v
	return nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
