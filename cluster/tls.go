package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
)

// handshakeTimeout bounds a TLS handshake on the Raft and API listeners.
const handshakeTimeout = 10 * time.Second

// ErrPeerNotRoot is returned when the other end of a Raft connection does not
// hold a root server certificate of this network.
var ErrPeerNotRoot = errors.New("cluster: peer is not a root server of this network")

// tlsIdentity holds what a root server presents and trusts: its certificate
// chain and key, and the AS roots of its network.
type tlsIdentity struct {
	network string

	mu    sync.RWMutex
	cert  *tls.Certificate
	roots *x509.CertPool

	// peerCheck, when set, also checks a root peer's verified chain (the
	// server's revocations and membership: CheckChain and more).
	peerCheck atomic.Pointer[func(chain []*x509.Certificate) error]
}

func newTLSIdentity(network string, cert tls.Certificate, roots []*x509.Certificate) (*tlsIdentity, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("cluster: TLS certificate chain is empty")
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: parse TLS certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &tlsIdentity{network: network, cert: &cert, roots: pool}, nil
}

func (t *tlsIdentity) certificate() *tls.Certificate {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.cert
}

func (t *tlsIdentity) rootPool() *x509.CertPool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.roots
}

// serverConfig is the TLS configuration of a listener. With requireRoot the
// peer must present a root server certificate of this network (the Raft
// transport); otherwise a client certificate is verified when given (the API,
// which decides per call what it needs).
func (t *tlsIdentity) serverConfig(requireRoot bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.certificate(), nil
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		// The pool is read per handshake so that a rotated root set applies
		// to new connections at once.
		GetConfigForClient: nil,
	}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = t.rootPool()
		if requireRoot {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.VerifyConnection = t.verifyRootPeer
		}
		return c, nil
	}
	return cfg
}

// clientConfig is the TLS configuration for dialing another root server: the
// server is verified against the AS roots and must itself be a root server.
func (t *tlsIdentity) clientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		RootCAs:    t.rootPool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.certificate(), nil
		},
		VerifyConnection: t.verifyRootPeer,
	}
}

// verifyRootPeer runs after the standard chain verification and checks the
// role: the leaf must name a root server of this network.
func (t *tlsIdentity) verifyRootPeer(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ErrPeerNotRoot
	}
	id, err := ca.IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerNotRoot, err)
	}
	if id.Kind != ca.KindRoot || id.Network != t.network {
		return fmt.Errorf("%w: it presented %s", ErrPeerNotRoot, id)
	}
	if check := t.peerCheck.Load(); check != nil {
		if err := (*check)(cs.VerifiedChains[0]); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrPeerNotRoot, id, err)
		}
	}
	return nil
}

// streamLayer is the raft.StreamLayer of a root server: TCP with mutual TLS
// 1.3 in both directions, both ends proving they are root servers of the same
// network. Like a BGP speaker's update-source, outgoing Raft connections
// leave from the address Raft listens on, so that peers (and fault proxies
// in tests) see one address per server.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	source    *net.TCPAddr
	id        *tlsIdentity
	serverCfg *tls.Config

	mu    sync.Mutex
	conns map[*tls.Conn]struct{} // open Raft connections, both directions

	closed atomic.Pointer[func(peer string)] // sees accepted connections end
}

// onClosed has f called, with the peer's root server name, when an
// accepted connection whose handshake completed ends (crashWatch).
func (s *streamLayer) onClosed(f func(peer string)) { s.closed.Store(&f) }

// ended reports the end of the accepted connection c to onClosed's func.
func (s *streamLayer) ended(c *tls.Conn) {
	f := s.closed.Load()
	if f == nil {
		return
	}
	cs := c.ConnectionState()
	if !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return
	}
	if id, err := ca.IdentityOf(cs.VerifiedChains[0][0]); err == nil {
		(*f)(id.Name)
	}
}

// track remembers c until it is closed, for recheck.
func (s *streamLayer) track(c *tls.Conn) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*tls.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *streamLayer) forget(c *tls.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// recheck closes every open Raft connection whose peer no longer passes
// the checks of a new handshake (its certificate chain was revoked, the
// server removed): a revocation ends a live connection, not only the next
// one. It returns how many it closed.
func (s *streamLayer) recheck() int {
	s.mu.Lock()
	conns := make([]*tls.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	closed := 0
	for _, c := range conns {
		cs := c.ConnectionState()
		if !cs.HandshakeComplete {
			continue
		}
		if err := s.id.verifyRootPeer(cs); err != nil {
			c.Close()
			s.forget(c)
			closed++
		}
	}
	return closed
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer serves Raft on ln and advertises advertise ("" means the
// listener's own address).
func newStreamLayer(ln net.Listener, advertise string, id *tlsIdentity) *streamLayer {
	s := &streamLayer{ln: ln, advertise: ln.Addr(), id: id, serverCfg: id.serverConfig(true)}
	if advertise != "" {
		s.advertise = advertiseAddr(advertise)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		s.source = &net.TCPAddr{IP: tcp.IP}
	}
	return s
}

// advertiseAddr is a net.Addr for a configured host:port.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// Accept hands Raft a TLS connection whose handshake runs, with a deadline,
// on its first read or write, so that one slow peer cannot stall the accept
// loop.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	tc := tls.Server(c, s.serverCfg)
	s.track(tc)
	return &handshakeConn{Conn: tc, layer: s}, nil
}

func (s *streamLayer) Close() error   { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to another root server and completes the handshake before it
// returns, so a refused peer is an error here and not a broken stream later.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("cluster: raft address %q: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{Config: s.id.clientConfig(host)}
	if s.source != nil {
		d.NetDialer = &net.Dialer{LocalAddr: s.source}
	}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	s.track(tc)
	return &trackedConn{Conn: tc, layer: s}, nil
}

// trackedConn is a dialled Raft connection that the stream layer forgets
// once it is closed.
type trackedConn struct {
	*tls.Conn
	layer *streamLayer
}

func (c *trackedConn) Close() error {
	c.layer.forget(c.Conn)
	return c.Conn.Close()
}

// handshakeConn completes the server side of a TLS handshake, bounded by
// handshakeTimeout, before the first byte is read or written.
type handshakeConn struct {
	*tls.Conn
	layer *streamLayer
	once  sync.Once
	err   error
	end   sync.Once
}

func (c *handshakeConn) Close() error {
	c.layer.forget(c.Conn)
	return c.Conn.Close()
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
		if c.err != nil {
			c.Close()
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if ne, ok := err.(net.Error); err != nil && (!ok || !ne.Timeout()) {
		c.end.Do(func() { c.layer.ended(c.Conn) }) // a deadline is not an end
	}
	return n, err
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
