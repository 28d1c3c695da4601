package ca

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"time"
)

const hashPrefix = "sha256:"

// Hash returns the CA hash of cert, as kubeadm prints it: "sha256:" and the
// lower-case hex SHA-256 of the certificate's DER SubjectPublicKeyInfo. It
// pins the key, so it survives re-issuing the certificate for the same key.
func Hash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hashPrefix + hex.EncodeToString(sum[:])
}

// ParseHash parses a CA hash ("sha256:" and 64 hex digits, either case) and
// returns the 32-byte digest.
func ParseHash(s string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(s, hashPrefix)
	if !ok {
		shown := s
		if len(shown) > 32 {
			shown = shown[:32] + "..."
		}
		return nil, fmt.Errorf("%w %q: it must start with %q; copy the value printed by `keymesh root bootstrap`", ErrHashFormat, shown, hashPrefix)
	}
	if len(hexPart) != 2*sha256.Size {
		return nil, fmt.Errorf("%w: %d hex digits after %q, want %d; copy the whole value printed by `keymesh root bootstrap`", ErrHashFormat, len(hexPart), hashPrefix, 2*sha256.Size)
	}
	sum, err := hex.DecodeString(hexPart)
	if err != nil {
		return nil, fmt.Errorf("%w: not hexadecimal after %q; copy the value printed by `keymesh root bootstrap`", ErrHashFormat, hashPrefix)
	}
	return sum, nil
}

// MatchHash reports whether cert's CA hash equals pin, comparing in
// constant time. A mismatch is a *HashMismatchError (ErrHashMismatch).
func MatchHash(cert *x509.Certificate, pin string) error {
	want, err := ParseHash(pin)
	if err != nil {
		return err
	}
	if cert == nil {
		return &HashMismatchError{Want: hashPrefix + hex.EncodeToString(want)}
	}
	if !matchSPKI(cert, want) {
		return &HashMismatchError{Want: hashPrefix + hex.EncodeToString(want), Got: []string{Hash(cert)}}
	}
	return nil
}

func matchSPKI(cert *x509.Certificate, want []byte) bool {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return subtle.ConstantTimeCompare(sum[:], want) == 1
}

// maxPresented is the longest certificate chain VerifyPinned looks at.
const maxPresented = 8

// VerifyPinned checks a TLS chain presented at first contact, with no
// system roots: among the presented certificates after the leaf there must
// be a CA certificate whose SubjectPublicKeyInfo matches pin; the leaf must
// chain to it through the other presented certificates, be valid at now,
// carry serverAuth, be valid for serverName (an IP address or DNS name;
// a ":port" suffix is ignored), and name a root server of the pinned
// root's network (VerifyRootServer): first contact is with a root server,
// never with a node holding a certificate of the network. It returns the
// pinned root. Use it from
// tls.Config.VerifyPeerCertificate; servers must therefore send the root
// with their chain.
func VerifyPinned(rawCerts [][]byte, pin string, serverName string, now time.Time) (*x509.Certificate, error) {
	want, err := ParseHash(pin)
	if err != nil {
		return nil, err
	}
	if now.IsZero() {
		return nil, ErrNoTime
	}
	if host, _, err := net.SplitHostPort(serverName); err == nil {
		serverName = host
	}
	if serverName == "" {
		return nil, fmt.Errorf("%w: no server name to check the certificate against; give the host or address you dialed", ErrChain)
	}
	if len(rawCerts) == 0 {
		return nil, fmt.Errorf("%w: the server presented no certificate", ErrChain)
	}
	if len(rawCerts) > maxPresented {
		return nil, fmt.Errorf("%w: the server presented %d certificates, at most %d accepted", ErrChain, len(rawCerts), maxPresented)
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: presented certificate %d: %w", ErrChain, i+1, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	var root *x509.Certificate
	var seen []string
	inters := x509.NewCertPool()
	for _, c := range certs[1:] {
		if root == nil && c.IsCA && matchSPKI(c, want) {
			root = c
			continue
		}
		if c.IsCA {
			seen = append(seen, Hash(c))
		}
		inters.AddCert(c)
	}
	if root == nil {
		return nil, &HashMismatchError{Want: hashPrefix + hex.EncodeToString(want), Got: seen}
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err = leaf.Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inters,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, &ChainError{Subject: describeCert(leaf), Err: err}
	}
	if err := VerifyRootServer(leaf, root); err != nil {
		return nil, err
	}
	return root, nil
}

// describeCert names a certificate for error messages: its identity, or
// its subject.
func describeCert(c *x509.Certificate) string {
	if id, err := IdentityOf(c); err == nil {
		return id.String()
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// PinnedTLSConfig returns a TLS 1.3 client configuration for first contact
// with a root server known only by its CA hash. crypto/tls cannot verify
// against a key hash, so its own verification is replaced, on every
// connection including resumed ones, by VerifyPinned(pin, serverName) in
// VerifyConnection. This is the one place keymesh turns off the standard
// verifier, and only together with its replacement. clock nil means
// time.Now. Once the root certificate is known, use a normal configuration
// with RootCAs.
func PinnedTLSConfig(pin, serverName string, clock func() time.Time) (*tls.Config, error) {
	if _, err := ParseHash(pin); err != nil {
		return nil, err
	}
	if serverName == "" {
		return nil, fmt.Errorf("%w: no server name to check the certificate against", ErrChain)
	}
	if clock == nil {
		clock = time.Now
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Replaced by VerifyPinned in VerifyConnection, never skipped.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			rawCerts := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				rawCerts[i] = c.Raw
			}
			_, err := VerifyPinned(rawCerts, pin, serverName, clock())
			return err
		},
	}, nil
}
