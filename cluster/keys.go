package cluster

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

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

// LoadCredential reads a credential file written by bootstrap or join (a
// certificate chain and its key in one PEM file, mode 0600).
func LoadCredential(path string) (tls.Certificate, error) {
	info, err := os.Stat(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: credential: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("cluster: credential %s is readable by others (mode %v); run `chmod 600 %s`", path, info.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: credential: %w", err)
	}
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: credential %s is not a certificate chain with its key: %w", path, err)
	}
	return c, nil
}
