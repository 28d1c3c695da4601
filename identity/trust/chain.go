package trust

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// Why CheckChain refuses a certificate chain. Each matches ErrRevoked.
var (
	// ErrRevoked is matched by the three errors below.
	ErrRevoked = errors.New("trust: revoked")
	// ErrCertRevoked: a certificate of the chain, the leaf or an issuing
	// intermediate above it, is revoked.
	ErrCertRevoked error = revokedError("certificate")
	// ErrKeyRevoked: the leaf certificate's key is revoked (by its kid).
	ErrKeyRevoked error = revokedError("key")
	// ErrNodeRevoked: the node the leaf certificate names is revoked.
	ErrNodeRevoked error = revokedError("node")
)

// revokedError is one kind of revocation; errors.Is matches it and
// ErrRevoked.
type revokedError string

func (e revokedError) Error() string        { return "trust: " + string(e) + " revoked" }
func (e revokedError) Is(target error) bool { return target == ErrRevoked }

// CheckChain checks a verified certificate chain, leaf first, against the
// revocations of v: no certificate of it is revoked by serial (so a
// revoked issuing intermediate stops every certificate under it at once),
// the leaf's key is not revoked by its kid (every certificate carrying a
// revoked key fails), and the node a node certificate names is not
// revoked. Root servers run it on every client certificate and Raft peer;
// node agents on their own certificate and every peer's.
func CheckChain(v View, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: an empty chain", ErrCertRevoked)
	}
	for _, c := range chain {
		serial := fsm.FormatSerial(c.SerialNumber)
		if _, ok := v.Revoked(fsm.RevocationCert, serial); ok {
			what := "certificate"
			if c.IsCA {
				what = "issuing certificate"
			}
			return fmt.Errorf("%w: %s %s (%s)", ErrCertRevoked, what, serial, c.Subject.CommonName)
		}
	}
	leaf := chain[0]
	if kid, err := identity.Thumbprint(leaf.PublicKey); err == nil {
		if _, ok := v.Revoked(fsm.RevocationKey, kid); ok {
			return fmt.Errorf("%w: %s", ErrKeyRevoked, kid)
		}
	}
	if id, err := ca.IdentityOf(leaf); err == nil && id.Kind == ca.KindNode {
		if _, ok := v.Revoked(fsm.RevocationNode, id.Name); ok {
			return fmt.Errorf("%w: %s", ErrNodeRevoked, id.Name)
		}
		if n, ok := v.Node(id.Name); ok && n.Status == fsm.NodeRevoked {
			return fmt.Errorf("%w: %s", ErrNodeRevoked, id.Name)
		}
	}
	return nil
}
