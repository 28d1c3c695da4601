package session

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// ALPN is the application protocol sessions negotiate: the protocol and
// its version. A peer that does not offer it is refused.
const ALPN = "keymesh-peer/1"

// Handshake failures, by reason (the metrics' label). Each wraps the
// detail.
var (
	// ErrPeerChain: the peer's certificate does not chain to a root of its
	// network, is not valid now, or has not the key usage.
	ErrPeerChain = errors.New("session: peer certificate not trusted")
	// ErrPeerIdentity: the certificate names no node, or not the node
	// dialled.
	ErrPeerIdentity = errors.New("session: peer certificate names another identity")
	// ErrPeerNetwork: the peer's network is not on the access list.
	ErrPeerNetwork = errors.New("session: peer network not accepted")
	// ErrPeerRevoked: the peer's certificate, an issuer above it, its key
	// or its node is revoked.
	ErrPeerRevoked = errors.New("session: peer credentials revoked")
	// ErrALPN: the peer did not negotiate ALPN.
	ErrALPN = errors.New("session: peer does not speak " + ALPN)
)

// handshakeReason is the metrics label of a handshake failure.
func handshakeReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{ErrPeerChain, "chain"}, {ErrPeerIdentity, "identity"}, {ErrPeerNetwork, "network"}, {ErrPeerRevoked, "revoked"}, {ErrALPN, "alpn"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "tls"
}

// transport makes the TLS configurations of sessions: TLS 1.3 only, both
// sides presenting their node certificates (the current one: a renewal is
// used by the next handshake), each verifying the other's against the
// trust view (verifyPeer).
type transport struct {
	network string
	creds   Credentials
	view    func() trust.View
	clock   func() time.Time
	// roots caches acceptedRoots for one trust index.
	roots atomic.Pointer[rootsAt]
}

// rootsAt is the pool of accepted roots of the trust view at index.
type rootsAt struct {
	index uint64
	pool  *x509.CertPool
}

// verifyPeer checks the peer's chain: it chains to a root of the network
// its certificate names (and no other network's), that network is on the
// access list, the leaf is a node (want, when not "", is the node dialled),
// is valid now and may be used for usage, and nothing in the chain, the
// leaf's key or the node is revoked. It returns the peer's identity and
// its verified chain.
func (t *transport) verifyPeer(certs []*x509.Certificate, want string, usage x509.ExtKeyUsage) (ca.Identity, []*x509.Certificate, error) {
	if len(certs) == 0 {
		return ca.Identity{}, nil, fmt.Errorf("%w: no certificate", ErrPeerChain)
	}
	leaf := certs[0]
	id, err := ca.IdentityOf(leaf)
	if err != nil || id.Kind != ca.KindNode {
		return ca.Identity{}, nil, fmt.Errorf("%w: %v is not a node certificate (%v)", ErrPeerIdentity, leaf.Subject.CommonName, err)
	}
	if want != "" && !namesPeer(want, id, t.network) {
		return id, nil, fmt.Errorf("%w: dialled %s, the certificate names %s", ErrPeerIdentity, want, id.URI())
	}
	view := t.view()
	anchors, err := trust.Anchors(view, t.network)
	if err != nil {
		return id, nil, fmt.Errorf("%w: %w", ErrPeerChain, err)
	}
	if !slices.Contains(anchors.Accepted, id.Network) {
		return id, nil, fmt.Errorf("%w: %s is not on the access list of %s", ErrPeerNetwork, id.Network, t.network)
	}
	roots := anchors.Roots[id.Network]
	if len(roots) == 0 {
		return id, nil, fmt.Errorf("%w: no trust anchor for %s", ErrPeerNetwork, id.Network)
	}
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, CurrentTime: t.clock(), KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return id, nil, fmt.Errorf("%w: %w", ErrPeerChain, err)
	}
	chain := chains[0]
	if err := trust.CheckChain(view, chain); err != nil {
		return id, nil, fmt.Errorf("%w: %w", ErrPeerRevoked, err)
	}
	return id, chain, nil
}

// namesPeer: the configured peer want is id. A node id is a node of this
// network (network); another network's node is configured by its SPIFFE
// ID.
func namesPeer(want string, id ca.Identity, network string) bool {
	if strings.HasPrefix(want, "spiffe://") {
		return id.URI().String() == want
	}
	return id.Network == network && id.Name == want
}

// peerNetwork is the network of the configured peer want: the one its
// SPIFFE ID names, or this node's for a node id.
func peerNetwork(want, network string) string {
	if id, err := identity.ParseSPIFFEID(want); err == nil {
		return id.Network
	}
	return network
}

// acceptedRoots are the roots of the networks the trust view accepts, nil
// when it has none usable; made once per trust index, not per handshake.
func (t *transport) acceptedRoots() *x509.CertPool {
	view := t.view()
	if c := t.roots.Load(); c != nil && c.index == view.Index() && c.index != 0 {
		return c.pool
	}
	anchors, err := trust.Anchors(view, t.network)
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	for _, n := range anchors.Accepted {
		for _, r := range anchors.Roots[n] {
			pool.AddCert(r)
		}
	}
	t.roots.Store(&rootsAt{index: view.Index(), pool: pool})
	return pool
}

func (t *transport) certificate() (*tls.Certificate, error) {
	c, err := t.creds.Certificate()
	if err != nil {
		return nil, fmt.Errorf("session: this node's certificate: %w", err)
	}
	return c, nil
}

// verified is where a handshake leaves what it verified: the peer's
// identity and chain, and the certificate this side presented (the OPEN's
// token is bound to it).
type verified struct {
	local *tls.Certificate
	peer  ca.Identity
	chain []*x509.Certificate
}

// server is the configuration of an accepted connection.
func (t *transport) server(v *verified) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// The client's chain is verified in VerifyConnection, against the
		// anchors of the network its certificate names. ClientCAs only
		// tells the client which roots this node accepts (the
		// CertificateRequest's certificate_authorities), so that a node of
		// several networks presents a certificate this one takes.
		ClientAuth: tls.RequireAnyClientCert,
		ClientCAs:  t.acceptedRoots(),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := t.certificate()
			v.local = c
			return c, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != ALPN {
				return fmt.Errorf("%w (offered %q)", ErrALPN, cs.NegotiatedProtocol)
			}
			var err error
			v.peer, v.chain, err = t.verifyPeer(cs.PeerCertificates, "", x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// client is the configuration of a connection to peer.
func (t *transport) client(peer string, v *verified) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// Node certificates are named by their SPIFFE ID, not a host name:
		// crypto/tls's verification is replaced by verifyPeer (the chain
		// to the anchors of the peer's network, the node dialled, the
		// revocations) in VerifyConnection, never skipped.
		InsecureSkipVerify: true,
		// The SNI names the network the peer is dialled in: a node of
		// several networks answers with that membership (Mux).
		ServerName: peerNetwork(peer, t.network),
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := t.certificate()
			if err != nil {
				return nil, err
			}
			// A peer that accepts none of this network's roots would
			// refuse the certificate: say so here, not after its alert.
			if err := cri.SupportsCertificate(c); err != nil {
				return nil, fmt.Errorf("%w: %s accepts no certificate of network %s (its acceptable CAs: %w)", ErrPeerNetwork, peer, t.network, err)
			}
			v.local = c
			return c, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != ALPN {
				return fmt.Errorf("%w (negotiated %q)", ErrALPN, cs.NegotiatedProtocol)
			}
			var err error
			v.peer, v.chain, err = t.verifyPeer(cs.PeerCertificates, peer, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// Credentials is this node's identity in sessions.
type Credentials interface {
	// Certificate is the TLS certificate (chain and key) for the next
	// handshake.
	Certificate() (*tls.Certificate, error)
	// MintOpen mints the token of an OPEN under the node's key: for aud,
	// bound to cert (the one this connection presented), valid for ttl.
	MintOpen(aud identity.SPIFFEID, cert *x509.Certificate, ttl time.Duration) (string, error)
}
