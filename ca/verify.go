package ca

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// VerifyChain checks that leaf chains to one of roots through intermediates,
// that every certificate is valid at now, that name constraints hold, and
// that the chain permits usage (x509.ExtKeyUsageAny accepts any). A leaf
// that is itself a CA is refused. Failures are *ChainError (ErrChain).
func VerifyChain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) error {
	_, err := verifyChains(leaf, intermediates, roots, usage, now)
	return err
}

func verifyChains(leaf *x509.Certificate, intermediates, roots []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) ([][]*x509.Certificate, error) {
	if leaf == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrChain)
	}
	if now.IsZero() {
		return nil, ErrNoTime
	}
	if len(roots) == 0 {
		return nil, &ChainError{Subject: describeCert(leaf), Err: fmt.Errorf("no trust anchors given")}
	}
	if leaf.IsCA {
		return nil, &ChainError{Subject: describeCert(leaf), Err: fmt.Errorf("a CA certificate cannot be used as an end-entity certificate")}
	}
	rp := x509.NewCertPool()
	for _, r := range roots {
		if r != nil {
			rp.AddCert(r)
		}
	}
	ip := x509.NewCertPool()
	for _, c := range intermediates {
		if c != nil {
			ip.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         rp,
		Intermediates: ip,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, &ChainError{Subject: describeCert(leaf), Err: err}
	}
	return chains, nil
}

// VerifyIdentity verifies leaf like VerifyChain and returns its identity. It
// also checks that the identity's network is the one the anchoring root is
// constrained to, when the root carries a URI name constraint (every root
// made by NewRoot does).
func VerifyIdentity(leaf *x509.Certificate, intermediates, roots []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (Identity, error) {
	chains, err := verifyChains(leaf, intermediates, roots, usage, now)
	if err != nil {
		return Identity{}, err
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, err
	}
	for _, ch := range chains {
		root := ch[len(ch)-1]
		if len(root.PermittedURIDomains) == 0 || slices.Contains(root.PermittedURIDomains, id.Network) {
			return id, nil
		}
	}
	return Identity{}, &ChainError{Subject: id.String(), Err: fmt.Errorf("no trust anchor of network %s", id.Network)}
}

// VerifyRootServer checks that leaf, already verified to chain to root,
// names a root server (spiffe://<network>/root/<name>) of the network root
// is constrained to. keymesh clients run it on every server they talk to:
// a certificate under the anchor is not enough, a node's certificate must
// not pass for a root server's. Failures wrap ErrNotRootServer.
func VerifyRootServer(leaf, root *x509.Certificate) error {
	id, err := IdentityOf(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotRootServer, err)
	}
	if id.Kind != KindRoot {
		return fmt.Errorf("%w: it presented %s", ErrNotRootServer, id)
	}
	if root != nil && len(root.PermittedURIDomains) > 0 && !slices.Contains(root.PermittedURIDomains, id.Network) {
		return fmt.Errorf("%w: it presented %s, the anchor is of %v", ErrNotRootServer, id, root.PermittedURIDomains)
	}
	return nil
}

// RootServerVerifier is a tls.Config VerifyConnection for clients of root
// servers: after crypto/tls verified the chain, the leaf must name a root
// server of the anchor's network (VerifyRootServer).
func RootServerVerifier(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return fmt.Errorf("%w: no verified chain", ErrNotRootServer)
	}
	chain := cs.VerifiedChains[0]
	return VerifyRootServer(chain[0], chain[len(chain)-1])
}

// CheckAnchor checks roots offered as the trust anchor of network (a
// federated network's AS roots): each is a CA certificate that may sign
// certificates, self-signed, valid at now, and name-constrained to
// spiffe://<network> URIs exactly as keymesh's AS roots are (a root
// without that constraint could vouch for identities of any network,
// ours included). Failures wrap ErrAnchor.
func CheckAnchor(roots []*x509.Certificate, network string, now time.Time) error {
	if err := ValidateNetwork(network); err != nil {
		return fmt.Errorf("%w: %w", ErrAnchor, err)
	}
	if len(roots) == 0 {
		return fmt.Errorf("%w: no certificate", ErrAnchor)
	}
	for _, c := range roots {
		name := describeCert(c)
		switch {
		case !c.BasicConstraintsValid || !c.IsCA:
			return fmt.Errorf("%w: %s is not a CA certificate", ErrAnchor, name)
		case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
			return fmt.Errorf("%w: %s may not sign certificates (no keyCertSign)", ErrAnchor, name)
		case now.Before(c.NotBefore) || now.After(c.NotAfter):
			return fmt.Errorf("%w: %s is valid from %s to %s, not now", ErrAnchor, name,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		case c.CheckSignatureFrom(c) != nil:
			return fmt.Errorf("%w: %s is not self-signed (give the network's AS root, not an intermediate)", ErrAnchor, name)
		case !slices.Equal(c.PermittedURIDomains, []string{network}):
			return fmt.Errorf("%w: %s is constrained to %v, not to network %s alone", ErrAnchor, name, c.PermittedURIDomains, network)
		}
	}
	return nil
}
