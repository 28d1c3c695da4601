package ca

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// Limits on certificate bundles.
const (
	MaxPEMSize   = 1 << 20 // bytes of PEM text ParseCertsPEM accepts
	MaxBundleLen = 256     // certificates in one bundle
)

const pemCertificate = "CERTIFICATE"

// EncodeCertsPEM encodes certificates as consecutive "CERTIFICATE" PEM
// blocks, in the order given. Nil entries are skipped.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses one or more "CERTIFICATE" PEM blocks. Only white
// space may surround and separate the blocks; other block types, headers,
// stray text, more than MaxBundleLen certificates or more than MaxPEMSize
// bytes are refused.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	if len(b) > MaxPEMSize {
		return nil, fmt.Errorf("%w: certificate PEM is %d bytes, at most %d accepted", ErrTooLarge, len(b), MaxPEMSize)
	}
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(b)
	for len(rest) > 0 {
		n := len(certs) + 1
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: unexpected text where certificate %d should begin; a bundle holds only PEM CERTIFICATE blocks", ErrPEM, n)
		}
		block, after := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: certificate %d is not a complete PEM block", ErrPEM, n)
		}
		// pem.Decode skips a broken block and tries the next one; refuse that.
		if bytes.Count(rest[:len(rest)-len(after)], []byte("-----BEGIN ")) != 1 {
			return nil, fmt.Errorf("%w: certificate %d is not a complete PEM block", ErrPEM, n)
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("%w: block %d is a %q block, expected %q", ErrPEM, n, block.Type, pemCertificate)
		}
		if len(block.Headers) != 0 {
			return nil, fmt.Errorf("%w: certificate %d has PEM headers", ErrPEM, n)
		}
		if n > MaxBundleLen {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrTooLarge, MaxBundleLen)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrPEM, n, err)
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(after)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block found", ErrPEM)
	}
	return certs, nil
}

// WriteCertsFile writes certificates as PEM to path with mode 0644,
// atomically.
func WriteCertsFile(path string, certs ...*x509.Certificate) error {
	if len(certs) == 0 {
		return fmt.Errorf("ca: writing %s: no certificates", path)
	}
	return writeFileAtomic(path, EncodeCertsPEM(certs...), 0o644)
}

// ReadCertsFile reads a PEM certificate file (see ParseCertsPEM).
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	b, err := readPublicFile(path, MaxPEMSize)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return certs, nil
}

// LoadCredential reads a credential file written by bootstrap or join (a
// certificate chain and its key in one PEM file, mode 0600).
func LoadCredential(path string) (tls.Certificate, error) {
	info, err := os.Stat(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: credential: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("ca: credential %s is readable by others (mode %v); run `chmod 600 %s`", path, info.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: credential: %w", err)
	}
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: credential %s is not a certificate chain with its key: %w", path, err)
	}
	return c, nil
}
