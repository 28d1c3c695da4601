// Package memnet is an in-memory network for tests of the peering
// sessions: listeners and dialers over net.Pipe, each connection carrying
// the addresses it was made between, so that what depends on a source
// address (rate limits per source) works as over TCP. It is the twin of
// TCP the way hashicorp/raft's InmemTransport is of its network transport.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// ErrRefused: nothing listens at the address dialled.
var ErrRefused = errors.New("memnet: connection refused")

// Network is a set of listeners reachable by address.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*Listener
	port      int
}

// New makes an empty network.
func New() *Network { return &Network{listeners: map[string]*Listener{}, port: 40000} }

// Addr is an address on the network.
type Addr string

func (Addr) Network() string  { return "memnet" }
func (a Addr) String() string { return string(a) }

// Listen listens at host:port (port 0 picks one).
func (n *Network) Listen(addr string) (*Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == "0" {
		n.port++
		port = strconv.Itoa(n.port)
	}
	addr = net.JoinHostPort(host, port)
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("memnet: %s is in use", addr)
	}
	l := &Listener{n: n, addr: Addr(addr), conns: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dialer dials from host (the source address the listener sees).
func (n *Network) Dialer(host string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		l, ok := n.listeners[addr]
		n.port++
		src := Addr(net.JoinHostPort(host, strconv.Itoa(n.port)))
		n.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrRefused, addr)
		}
		a, b := net.Pipe()
		client := &conn{Conn: a, local: src, remote: l.addr}
		server := &conn{Conn: b, local: l.addr, remote: src}
		select {
		case l.conns <- server:
			return client, nil
		case <-l.done:
			a.Close()
			b.Close()
			return nil, fmt.Errorf("%w: %s", ErrRefused, addr)
		case <-ctx.Done():
			a.Close()
			b.Close()
			return nil, ctx.Err()
		}
	}
}

// Listener is a net.Listener on the network.
type Listener struct {
	n     *Network
	addr  Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		delete(l.n.listeners, string(l.addr))
		l.n.mu.Unlock()
	})
	return nil
}

// Addr is where the listener listens.
func (l *Listener) Addr() net.Addr { return l.addr }

type conn struct {
	net.Conn
	local, remote Addr
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }
