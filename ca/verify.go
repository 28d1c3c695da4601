package ca

import (
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
