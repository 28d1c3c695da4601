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
	open   map[string]*peerConns             // accepted connections, by peer root name (under mu)
}

// peerConns counts the accepted connections from one root server whose
// handshake completed and that have not ended, and says when the last
// of them was opened.
type peerConns struct {
	open   int
	opened time.Time
}

// openFrom reports whether a connection from the root server peer is
// open, or was opened after since: a leader whose connections something
// keeps cutting opens new ones, a crashed one does not.
func (s *streamLayer) openFrom(peer string, since time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.open[peer]
	return p != nil && (p.open > 0 || p.opened.After(since))
}

func (s *streamLayer) countOpen(peer string, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[string]*peerConns{}
	}
	p := s.open[peer]
	if p == nil {
		p = &peerConns{}
		s.open[peer] = p
	}
	p.open += d
	if d > 0 {
		p.opened = time.Now()
	}
}

// onClosed has f called, with the peer's root server name, when an
// accepted connection whose handshake completed ends (crashWatch).
func (s *streamLayer) onClosed(f func(peer string)) { s.closed.Store(&f) }

// ended reports the end of an accepted connection from the root server
// peer to onClosed's func.
func (s *streamLayer) ended(peer string) {
	if f := s.closed.Load(); f != nil {
		(*f)(peer)
	}
}

// peerName is the root server name in c's verified chain, or "" before
// the handshake completed.
func peerName(c *tls.Conn) string {
	cs := c.ConnectionState()
	if !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	id, err := ca.IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return ""
	}
	return id.Name
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
	tc, err := s.dialTLS(address, timeout)
	if err != nil {
		return nil, err
	}
	return &redialConn{layer: s, addr: address, c: tc}, nil
}

func (s *streamLayer) dialTLS(address raft.ServerAddress, timeout time.Duration) (*tls.Conn, error) {
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
	return tc, nil
}

// redialConn is a dialled Raft connection, which the stream layer forgets
// once it is closed.
//
// NetworkTransport keeps dialled connections in a pool and sends each
// request on one it takes from there. When the peer's process has ended
// since that connection was last used (it crashed, or stopped and was
// started again), the request meets the old process's close and fails,
// and Raft does not send a vote request twice: a follower that starts an
// election on such a connection goes without the restarted peer's vote
// and, in a cluster of three, waits out an election timeout. So before the
// first write of each request (the first write after a read) redialConn
// looks, without blocking and without taking anything, whether the peer
// has closed the connection or sent something unasked (a peer root sends
// nothing but answers; a TLS close_notify comes first when it stopped
// cleanly), and if so dials again and sends the request on the new
// connection. Only a request's first write is ever moved, so no request
// is split between two connections. This holds because a connection
// carries one request at a time (MaxRPCsInFlight 1, no pipelined
// replication: see newRaftNode): with requests in flight, the answers
// waiting on the socket would look unasked.
type redialConn struct {
	layer *streamLayer
	addr  raft.ServerAddress

	mu      sync.Mutex
	c       *tls.Conn
	read    bool      // a read came after the last write: the next write starts a request
	rd, wd  time.Time // the deadlines set, for a connection dialled again
	redials int
	closed  bool
}

func (c *redialConn) conn() *tls.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c
}

func (c *redialConn) Read(b []byte) (int, error) {
	n, err := c.conn().Read(b)
	if n > 0 {
		c.mu.Lock()
		c.read = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *redialConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	tc, starts, wd := c.c, c.read, c.wd
	c.read = false
	c.mu.Unlock()
	if starts && peerHasClosed(tc.NetConn()) {
		timeout := handshakeTimeout
		if !wd.IsZero() {
			timeout = time.Until(wd)
		}
		nc, err := c.layer.dialTLS(c.addr, timeout)
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		if c.closed { // closed while it dialled
			c.mu.Unlock()
			c.layer.forget(nc)
			nc.Close()
			return 0, net.ErrClosed
		}
		c.c, c.redials = nc, c.redials+1
		nc.SetReadDeadline(c.rd)
		nc.SetWriteDeadline(c.wd)
		c.mu.Unlock()
		c.layer.forget(tc)
		tc.Close()
		tc = nc
	}
	return tc.Write(b)
}

func (c *redialConn) Close() error {
	c.mu.Lock()
	tc := c.c
	c.closed = true
	c.mu.Unlock()
	c.layer.forget(tc)
	return tc.Close()
}

func (c *redialConn) LocalAddr() net.Addr  { return c.conn().LocalAddr() }
func (c *redialConn) RemoteAddr() net.Addr { return c.conn().RemoteAddr() }

func (c *redialConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd, c.wd = t, t
	return c.c.SetDeadline(t)
}

func (c *redialConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd = t
	return c.c.SetReadDeadline(t)
}

func (c *redialConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd = t
	return c.c.SetWriteDeadline(t)
}

// handshakeConn completes the server side of a TLS handshake, bounded by
// handshakeTimeout, before the first byte is read or written.
type handshakeConn struct {
	*tls.Conn
	layer *streamLayer
	once  sync.Once
	err   error
	peer  string // the peer's root server name, once the handshake completed
	end   sync.Once
}

func (c *handshakeConn) Close() error {
	c.finish(false)
	c.layer.forget(c.Conn)
	return c.Conn.Close()
}

// finish counts c as closed, once, and reports an end the peer caused
// (a read that failed other than by a deadline) to the stream layer.
func (c *handshakeConn) finish(byPeer bool) {
	c.end.Do(func() {
		if c.peer == "" {
			return
		}
		c.layer.countOpen(c.peer, -1)
		if byPeer {
			c.layer.ended(c.peer)
		}
	})
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
		if c.err != nil {
			c.Close()
			return
		}
		if c.peer = peerName(c.Conn); c.peer != "" {
			c.layer.countOpen(c.peer, 1)
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
		c.finish(true) // a deadline is not an end
	}
	return n, err
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
