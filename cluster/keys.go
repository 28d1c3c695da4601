package cluster

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/keymesh/keymesh/ca"
)

func signerOf(c tls.Certificate) (crypto.Signer, error) {
	s, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("cluster: certificate key is not a signer")
	}
	return s, nil
}

// tlsCertificate pairs a chain (leaf first) with its key.
func tlsCertificate(chain []*x509.Certificate, key crypto.Signer) tls.Certificate {
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, cert := range chain {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// credentialPEM is the single-file form of a client credential that the CLI
// reads: the certificate chain followed by the private key.
func credentialPEM(chain []*x509.Certificate, key crypto.Signer) ([]byte, error) {
	keyPEM, err := ca.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return append(ca.EncodeCertsPEM(chain...), keyPEM...), nil
}
