package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Validity periods and limits of the certificate profiles.
const (
	// Backdate is how far NotBefore lies before the signing time, to absorb
	// clock skew between root servers and nodes. Never more than a minute.
	Backdate = time.Minute
	// DefaultNodeValidity is a node certificate's lifetime when the request
	// does not say.
	DefaultNodeValidity = 24 * time.Hour
	// MaxNodeValidity is the longest node certificate lifetime SignNode grants.
	MaxNodeValidity = 90 * 24 * time.Hour
	// DefaultAdminValidity is an admin certificate's lifetime when SignAdmin
	// is given 0.
	DefaultAdminValidity = 365 * 24 * time.Hour
	// MaxDNSNames is the most DNS SANs a node or server certificate carries.
	MaxDNSNames = 32
	// SerialBits is the number of random bits in every serial number.
	SerialBits = 158
)

// Signer pairs a CA certificate with its private key: the AS root or a root
// server's issuing intermediate.
type Signer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// check reports whether s can sign at now.
func (s Signer) check(now time.Time) error {
	if s.Cert == nil || s.Key == nil {
		return fmt.Errorf("%w: certificate or key missing", ErrIssuer)
	}
	if !s.Cert.BasicConstraintsValid || !s.Cert.IsCA || s.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %q is not a CA certificate with keyCertSign", ErrIssuer, s.Cert.Subject.CommonName)
	}
	if !publicKeysEqual(s.Key.Public(), s.Cert.PublicKey) {
		return fmt.Errorf("%w: the private key does not belong to %q; check the data directory's key and certificate files", ErrIssuer, s.Cert.Subject.CommonName)
	}
	if now.IsZero() {
		return ErrNoTime
	}
	if now.Before(s.Cert.NotBefore) || now.After(s.Cert.NotAfter) {
		return fmt.Errorf("%w: %q is valid from %s to %s, not at %s; rotate the issuing certificate",
			ErrIssuer, s.Cert.Subject.CommonName, s.Cert.NotBefore.UTC().Format(time.RFC3339), s.Cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// network returns the network an issuer belongs to: the network of its
// identity (intermediates) or of its URI name constraint (roots).
func (s Signer) network() (string, bool) {
	if s.Cert == nil {
		return "", false
	}
	if id, err := IdentityOf(s.Cert); err == nil {
		return id.Network, true
	}
	if len(s.Cert.PermittedURIDomains) == 1 {
		return s.Cert.PermittedURIDomains[0], true
	}
	return "", false
}

// checkSubCA reports whether s may sign a CA certificate (its path length
// leaves room for one).
func (s Signer) checkSubCA() error {
	if s.Cert != nil && s.Cert.BasicConstraintsValid && s.Cert.MaxPathLen == 0 && s.Cert.MaxPathLenZero {
		return fmt.Errorf("%w: %q has path length 0 and cannot sign CA certificates; sign with the AS root", ErrIssuer, s.Cert.Subject.CommonName)
	}
	return nil
}

func (s Signer) checkNetwork(network string) error {
	if n, ok := s.network(); ok && n != network {
		return fmt.Errorf("%w: %q belongs to network %s, not %s", ErrIssuer, s.Cert.Subject.CommonName, n, network)
	}
	return nil
}

// NewSerial returns a positive random serial number with SerialBits random
// bits; its top bit is fixed so every serial is 20 bytes long in DER.
// rnd nil means crypto/rand.
func NewSerial(rnd io.Reader) (*big.Int, error) {
	var b [20]byte
	if _, err := io.ReadFull(randOrDefault(rnd), b[:]); err != nil {
		return nil, fmt.Errorf("ca: reading randomness for a serial number: %w", err)
	}
	b[0] = b[0]&0x3f | 0x40
	return new(big.Int).SetBytes(b[:]), nil
}

// notBefore returns now minus Backdate, rounded up to a whole second
// (certificates carry seconds), so the backdate is never more than Backdate.
func notBefore(now time.Time) time.Time {
	nb := now.Add(-Backdate).UTC()
	if t := nb.Truncate(time.Second); !t.Equal(nb) {
		nb = t.Add(time.Second)
	}
	return nb
}

// keyID is the subject key identifier of pub: the first 160 bits of the
// SHA-256 of its SubjectPublicKeyInfo (RFC 7093, method 1 in spirit).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return sum[:20], nil
}

// issue fills in serial, key identifier and NotBefore, caps NotAfter at the
// issuer's, and signs tmpl.
func issue(issuer Signer, tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	if err := issuer.check(now); err != nil {
		return nil, err
	}
	if _, err := KeyTypeOf(pub); err != nil {
		return nil, err
	}
	return sign(tmpl, issuer.Cert, pub, issuer.Key, now, rnd)
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	serial, err := NewSerial(rnd)
	if err != nil {
		return nil, err
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.SubjectKeyId = skid
	tmpl.NotBefore = notBefore(now)
	if parent != tmpl {
		// Set explicitly: crypto/x509 leaves it out when subject and issuer
		// names are equal, as for a cross-signed root.
		tmpl.AuthorityKeyId = parent.SubjectKeyId
		if tmpl.NotAfter.After(parent.NotAfter) {
			tmpl.NotAfter = parent.NotAfter
		}
	}
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("%w: the certificate would expire at %s, not after now (%s)", ErrValidity, tmpl.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	der, err := x509.CreateCertificate(randOrDefault(rnd), tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("ca: signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing the certificate just signed: %w", err)
	}
	return cert, nil
}

// RootCommonName is the subject CN of a network's AS root.
func RootCommonName(network string) string { return "keymesh " + network + " AS root" }

// NewRoot makes the AS root CA of a network: a new ECDSA P-384 key and a
// self-signed certificate (ecdsa-with-SHA384) valid for 10 years, with
// keyCertSign and cRLSign, a path length of 2 (one level for the issuing
// intermediates, one for a cross-signed successor root during rotation), and
// a critical name constraint that permits only URIs under
// spiffe://<network>/ — crypto/x509, OpenSSL and go-spiffe all enforce it.
// rnd nil means crypto/rand.
func NewRoot(network string, now time.Time, rnd io.Reader) (Signer, error) {
	if err := ValidateNetwork(network); err != nil {
		return Signer{}, err
	}
	if now.IsZero() {
		return Signer{}, ErrNoTime
	}
	key, err := GenerateKey(KeyP384, rnd)
	if err != nil {
		return Signer{}, err
	}
	tmpl := rootTemplate(network, now)
	cert, err := sign(tmpl, tmpl, key.Public(), key, now, rnd)
	if err != nil {
		return Signer{}, err
	}
	return Signer{Cert: cert, Key: key}, nil
}

func rootTemplate(network string, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:                     pkix.Name{CommonName: RootCommonName(network), Organization: []string{"keymesh"}},
		NotAfter:                    now.AddDate(10, 0, 0).UTC(),
		SignatureAlgorithm:          x509.ECDSAWithSHA384,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  2,
		PermittedURIDomains:         []string{network},
		PermittedDNSDomainsCritical: true,
	}
}

// CrossSign certifies the public key and subject of newRoot (a successor AS
// root made by NewRoot) under oldRoot, so verifiers that trust only the old
// root accept chains of the new one during a rotation. The cross certificate
// keeps the new root's subject, key identifier and name constraint, has path
// length 1, and expires with the earlier of the two roots.
func CrossSign(oldRoot Signer, newRoot *x509.Certificate, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	if newRoot == nil || !newRoot.IsCA {
		return nil, fmt.Errorf("%w: the certificate to cross-sign is not a CA", ErrIssuer)
	}
	if err := oldRoot.check(now); err != nil {
		return nil, err
	}
	if err := oldRoot.checkSubCA(); err != nil {
		return nil, err
	}
	if _, err := KeyTypeOf(newRoot.PublicKey); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:                     newRoot.Subject,
		NotAfter:                    newRoot.NotAfter,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  1,
		PermittedURIDomains:         newRoot.PermittedURIDomains,
		PermittedDNSDomainsCritical: len(newRoot.PermittedURIDomains) > 0,
	}
	return sign(tmpl, oldRoot.Cert, newRoot.PublicKey, oldRoot.Key, now, rnd)
}

// SignIntermediate certifies pub as the issuing CA of one root server:
// CA with path length 0, keyCertSign|cRLSign, URI SAN
// spiffe://<network>/root/<serverName>, valid for one year (never past the
// root). Signed by the AS root.
func SignIntermediate(root Signer, pub crypto.PublicKey, network, serverName string, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	id := Identity{Network: network, Kind: KindRoot, Name: serverName}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := root.checkNetwork(network); err != nil {
		return nil, err
	}
	if err := root.checkSubCA(); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "keymesh " + network + " issuer " + serverName, Organization: []string{"keymesh"}},
		NotAfter:              now.AddDate(1, 0, 0).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{id.URI()},
	}
	return issue(root, tmpl, pub, now, rnd)
}

// SignServerTLS certifies pub for a root server's Raft and API listeners:
// key usage digitalSignature, extended key usage serverAuth and clientAuth,
// URI SAN spiffe://<network>/root/<serverName>, one SAN per host (an IP SAN
// for an address, a DNS SAN otherwise; only the hosts given, no port), valid
// for one year (never past the issuer).
func SignServerTLS(issuer Signer, pub crypto.PublicKey, network, serverName string, hosts []string, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	id := Identity{Network: network, Kind: KindRoot, Name: serverName}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := issuer.checkNetwork(network); err != nil {
		return nil, err
	}
	dns, ips, err := splitHosts(hosts)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: serverName, Organization: []string{"keymesh"}},
		NotAfter:              now.AddDate(1, 0, 0).UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	return issue(issuer, tmpl, pub, now, rnd)
}

// splitHosts sorts hosts into DNS names and IP addresses, without duplicates.
func splitHosts(hosts []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err == nil {
			return nil, nil, fmt.Errorf("%w: %q has a port; give the host name or address alone", ErrHost, h)
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if err := validateDNSName(h); err != nil {
			return nil, nil, err
		}
		if l := strings.ToLower(h); !slices.Contains(dns, l) {
			dns = append(dns, l)
		}
	}
	if len(dns)+len(ips) > MaxDNSNames {
		return nil, nil, fmt.Errorf("%w: %d hosts, at most %d allowed", ErrHost, len(dns)+len(ips), MaxDNSNames)
	}
	return dns, ips, nil
}

func validateDNSName(h string) error {
	if h == "" {
		return fmt.Errorf("%w: empty host name", ErrHost)
	}
	if err := validateHostname(h, true); err != nil {
		return fmt.Errorf("%w: %q is neither an IP address nor a DNS name: %s", ErrHost, h, err.Error())
	}
	return nil
}

// SignAdmin certifies pub as an operator credential: key usage
// digitalSignature, extended key usage clientAuth, URI SAN
// spiffe://<network>/admin/<name>. validity 0 means DefaultAdminValidity;
// the certificate never outlives its issuer.
func SignAdmin(issuer Signer, pub crypto.PublicKey, network, name string, validity time.Duration, now time.Time, rnd io.Reader) (*x509.Certificate, error) {
	id := Identity{Network: network, Kind: KindAdmin, Name: name}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := issuer.checkNetwork(network); err != nil {
		return nil, err
	}
	if validity < 0 {
		return nil, fmt.Errorf("%w: admin validity %s is negative", ErrValidity, validity)
	}
	if validity == 0 {
		validity = DefaultAdminValidity
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keymesh"}},
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
	}
	return issue(issuer, tmpl, pub, now, rnd)
}

// NodeRequest is an approved node registration, ready to sign. Every field
// comes from the approved registration; nothing is copied from the CSR
// except the public key (after CheckCSR).
type NodeRequest struct {
	PublicKey crypto.PublicKey // the node's key, from a CSR that passed CheckCSR
	Network   string           // the network the node joins
	NodeID    string           // the node id, [A-Za-z0-9._-]{1,128}
	DNSNames  []string         // optional DNS SANs, at most MaxDNSNames, no wildcards
	Validity  time.Duration    // lifetime; 0 means DefaultNodeValidity, at most MaxNodeValidity
	Now       time.Time        // signing time (the proposer's timestamp)
}

func (r NodeRequest) validate() error {
	if _, err := KeyTypeOf(r.PublicKey); err != nil {
		return err
	}
	if err := (Identity{Network: r.Network, Kind: KindNode, Name: r.NodeID}).Validate(); err != nil {
		return err
	}
	if len(r.DNSNames) > MaxDNSNames {
		return fmt.Errorf("%w: %d DNS names, at most %d allowed", ErrHost, len(r.DNSNames), MaxDNSNames)
	}
	for _, d := range r.DNSNames {
		if err := validateDNSName(d); err != nil {
			return err
		}
	}
	if r.Validity < 0 || r.Validity > MaxNodeValidity {
		return fmt.Errorf("%w: node validity %s is outside 0 (default %s) to %s", ErrValidity, r.Validity, DefaultNodeValidity, MaxNodeValidity)
	}
	if r.Now.IsZero() {
		return ErrNoTime
	}
	return nil
}

// SignNode issues a node certificate: URI SAN spiffe://<network>/node/<id>,
// the DNS SANs of the request, key usage digitalSignature, extended key
// usage clientAuth and serverAuth, a random serial (NewSerial), NotBefore
// Backdate before req.Now and NotAfter req.Now+Validity (never past the
// issuer). The issuer must belong to req.Network.
func SignNode(issuer Signer, req NodeRequest, rnd io.Reader) (*x509.Certificate, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	if err := issuer.checkNetwork(req.Network); err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultNodeValidity
	}
	var dns []string
	for _, d := range req.DNSNames {
		if l := strings.ToLower(d); !slices.Contains(dns, l) {
			dns = append(dns, l)
		}
	}
	id := Identity{Network: req.Network, Kind: KindNode, Name: req.NodeID}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: req.NodeID, Organization: []string{"keymesh"}},
		NotAfter:              req.Now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
		DNSNames:              dns,
	}
	return issue(issuer, tmpl, req.PublicKey, req.Now, rnd)
}
