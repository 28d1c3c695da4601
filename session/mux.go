package session

import (
	"bytes"
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A node that is a member of several networks runs one Speaker for each
// (its certificate, its trust view, its tokens) on one listening port. The
// Mux shares that port: it reads each connection's TLS ClientHello with
// crypto/tls (no parser of our own), and hands the connection, with those
// bytes still to be read, to the speaker of the network the server name
// (SNI) names; a dialling speaker puts its peer's network there. A hello
// without a server name, or naming a network the node is not a member
// of, goes to the node's first network, whose handshake then refuses what
// it does not accept.

// Defaults of a Mux.
const (
	DefaultMuxPending          = 64
	DefaultMuxPendingPerSource = 8
	DefaultMuxHelloTimeout     = DefaultOpenTimeout
	// maxHello bounds what is read for a ClientHello (a record is 16 KiB
	// at most; a hello may span a few).
	maxHello = 64 << 10
)

// ErrHelloTooLarge: a ClientHello longer than the Mux reads.
var ErrHelloTooLarge = errors.New("session: TLS ClientHello too large")

// MuxConfig configures a Mux.
type MuxConfig struct {
	// Default is the network of connections whose hello names no member
	// network (the node's first).
	Default string
	// MaxPending bounds the hellos read at once; past it, the oldest
	// still unread is closed. Default DefaultMuxPending.
	MaxPending int
	// MaxPendingPerSource bounds the hellos read at once from one source
	// (an IPv4 address, an IPv6 /64): a connection past it is closed at
	// once. Default DefaultMuxPendingPerSource.
	MaxPendingPerSource int
	// HelloTimeout bounds the reading of one hello. Default
	// DefaultMuxHelloTimeout.
	HelloTimeout time.Duration
	Logger       hclog.Logger
}

// Mux shares a listener among the speakers of a node's networks. Make it
// with NewMux, take each network's Listener, then Run it.
type Mux struct {
	ln      net.Listener
	cfg     MuxConfig
	mu      sync.Mutex
	subs    map[string]*muxListener
	sources map[string]int // hellos being read, by source host
	order   *list.List     // of *pendingHello, oldest first
	pending atomic.Int64
	dropped atomic.Uint64
}

// NewMux makes a Mux over ln; Run closes ln.
func NewMux(ln net.Listener, cfg MuxConfig) *Mux {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMuxPending
	}
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = DefaultMuxPendingPerSource
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultMuxHelloTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Mux{ln: ln, cfg: cfg, subs: map[string]*muxListener{}, sources: map[string]int{}, order: list.New()}
}

// Listener is the listener of network's speaker (made on the first call).
func (m *Mux) Listener(network string) net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.subs[network]; ok {
		return l
	}
	l := &muxListener{addr: m.ln.Addr(), conns: make(chan net.Conn, m.cfg.MaxPending), done: make(chan struct{})}
	m.subs[network] = l
	return l
}

// Dropped counts the connections closed before a speaker took them: past
// MaxPendingPerSource, the oldest past MaxPending, with no readable hello,
// or for a speaker that stopped.
func (m *Mux) Dropped() uint64 { return m.dropped.Load() }

// Run accepts until ctx ends or the listener fails, then closes the
// listener and every network's.
func (m *Mux) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { m.ln.Close() })
	defer stop()
	defer func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, l := range m.subs {
			l.Close()
		}
	}()
	var delay time.Duration
	for {
		nc, err := m.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			delay = acceptPause(delay)
			m.cfg.Logger.Warn("accepting a peering connection failed; pausing", "error", err, "pause", delay)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		p := &pendingHello{src: muxSource(nc.RemoteAddr()), nc: nc}
		if !m.admit(p) {
			m.dropped.Add(1)
			nc.Close()
			continue
		}
		go func() {
			defer m.release(p)
			m.route(p)
		}()
	}
}

// pendingHello is a connection whose hello is being read.
type pendingHello struct {
	src     string
	nc      net.Conn
	elem    *list.Element
	evicted bool
}

// muxSource is the source a connection counts against: its IPv4 address,
// or the /64 of its IPv6 address (what one host is usually given).
func muxSource(a net.Addr) string {
	src := sourceOf(a)
	if ip, err := netip.ParseAddr(src); err == nil && ip.Is6() && !ip.Is4In6() {
		if pfx, err := ip.Prefix(64); err == nil {
			return pfx.String()
		}
	}
	return src
}

// admit counts p's hello: false when its source holds MaxPendingPerSource
// already; past MaxPending, the oldest hello still unread is closed to
// make room (an honest hello is read in a moment; a connection that sends
// none is what waits longest).
func (m *Mux) admit(p *pendingHello) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sources[p.src] >= m.cfg.MaxPendingPerSource {
		return false
	}
	if m.order.Len() >= m.cfg.MaxPending {
		old := m.order.Remove(m.order.Front()).(*pendingHello)
		old.evicted = true
		m.forget(old)
		m.dropped.Add(1)
		old.nc.Close()
	}
	p.elem = m.order.PushBack(p)
	m.sources[p.src]++
	m.pending.Add(1)
	return true
}

// release ends the count of p's hello (once: an evicted one is not counted
// any more).
func (m *Mux) release(p *pendingHello) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.evicted {
		return
	}
	m.order.Remove(p.elem)
	m.forget(p)
}

func (m *Mux) forget(p *pendingHello) {
	m.pending.Add(-1)
	if m.sources[p.src]--; m.sources[p.src] <= 0 {
		delete(m.sources, p.src)
	}
}

// route reads p's hello and hands its connection to its network's
// listener.
func (m *Mux) route(p *pendingHello) {
	nc := p.nc
	name, c, err := PeekServerName(nc, m.cfg.HelloTimeout)
	if err != nil {
		m.mu.Lock()
		if !p.evicted { // (counted when it was)
			m.dropped.Add(1)
		}
		m.mu.Unlock()
		m.cfg.Logger.Debug("peering connection without a readable TLS hello", "remote", nc.RemoteAddr().String(), "error", err)
		nc.Close()
		return
	}
	m.mu.Lock()
	l, ok := m.subs[name]
	if !ok {
		l = m.subs[m.cfg.Default]
	}
	m.mu.Unlock()
	if l == nil || !l.offer(c) {
		m.dropped.Add(1)
		c.Close()
	}
}

// errPeeked ends the handshake PeekServerName runs once it has the hello.
var errPeeked = errors.New("session: hello read")

// PeekServerName reads the TLS ClientHello at the start of nc (within
// timeout) and returns its server name and a connection that reads the
// same bytes again from the start. It writes nothing to nc.
func PeekServerName(nc net.Conn, timeout time.Duration) (string, net.Conn, error) {
	rc := &recordConn{Conn: nc}
	var name string
	var seen bool
	nc.SetReadDeadline(time.Now().Add(timeout))
	err := tls.Server(rc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		name, seen = h.ServerName, true
		return nil, errPeeked
	}}).Handshake()
	nc.SetReadDeadline(time.Time{})
	if !seen {
		if rc.tooLarge {
			return "", nil, ErrHelloTooLarge
		}
		return "", nil, fmt.Errorf("session: no TLS ClientHello: %w", err)
	}
	return name, &replayConn{Conn: nc, r: io.MultiReader(bytes.NewReader(rc.buf.Bytes()), nc)}, nil
}

// recordConn keeps what is read and answers nothing (the alert
// crypto/tls sends when the peek ends the handshake is not written).
type recordConn struct {
	net.Conn
	buf      bytes.Buffer
	tooLarge bool
}

func (r *recordConn) Read(p []byte) (int, error) {
	if r.buf.Len() >= maxHello {
		r.tooLarge = true
		return 0, ErrHelloTooLarge
	}
	p = p[:min(len(p), maxHello-r.buf.Len())]
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func (r *recordConn) Write(p []byte) (int, error) { return len(p), nil }

// replayConn reads what the peek read, then the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// muxListener is one network's listener of a Mux.
type muxListener struct {
	addr   net.Addr
	conns  chan net.Conn
	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// offer hands c to the listener's Accept, false when it is closed or
// MaxPending connections wait already.
func (l *muxListener) offer(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	select {
	case l.conns <- c:
		return true
	default:
		return false
	}
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *muxListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.done)
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return nil
		}
	}
}

func (l *muxListener) Addr() net.Addr { return l.addr }
