package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// FaultNet is a set of TCP proxies, one in front of each root server's Raft
// listener, that can cut the links between servers without root privileges.
//
// Every server listens for Raft on its own loopback address and dials from
// it (like a BGP update-source), and advertises its proxy's address to the
// others. A proxy therefore knows both ends of every connection it carries:
// the server it stands in front of, and the dialing server by the source
// address. A cut link refuses new connections and closes the open ones, in
// both directions.
//
// Call Add for each server before it starts (its address is what the server
// advertises), Isolate or Cut to make faults, Heal to undo them, and Close
// at the end. All methods are safe for concurrent use.
type FaultNet struct {
	mu      sync.Mutex
	proxies map[string]*proxy // by server name
	byIP    map[string]string // source IP -> server name
	blocked map[link]bool
	closed  bool
	stats   NetStats
}

// NetStats counts what the proxies did.
type NetStats struct {
	Accepted int // connections forwarded
	Refused  int // connections refused because their link was cut
	Cut      int // open connections closed by a cut
	Failed   int // connections whose upstream could not be reached
}

// link is an unordered pair of server names.
type link struct{ a, b string }

func linkOf(a, b string) link {
	if a > b {
		a, b = b, a
	}
	return link{a, b}
}

// ErrNetClosed is returned by Add after Close.
var ErrNetClosed = errors.New("harness: fault net is closed")

// NewFaultNet returns an empty FaultNet.
func NewFaultNet() *FaultNet {
	return &FaultNet{proxies: map[string]*proxy{}, byIP: map[string]string{}, blocked: map[link]bool{}}
}

// Add starts the proxy of server name, which dials Raft from sourceIP. The
// proxy listens on sourceIP with a free port and returns that address, the
// one the server must advertise; upstream returns the server's real Raft
// address when a connection arrives (it may not be known before the server
// has started).
func (n *FaultNet) Add(name, sourceIP string, upstream func() (string, error)) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(sourceIP, "0"))
	if err != nil {
		return "", fmt.Errorf("harness: proxy for %s: %w", name, err)
	}
	p := &proxy{net: n, name: name, ln: ln, upstream: upstream, conns: map[*pipe]struct{}{}}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		ln.Close()
		return "", ErrNetClosed
	}
	if _, dup := n.proxies[name]; dup {
		n.mu.Unlock()
		ln.Close()
		return "", fmt.Errorf("harness: a proxy for %s exists", name)
	}
	n.proxies[name] = p
	n.byIP[sourceIP] = name
	n.mu.Unlock()
	p.wg.Add(1)
	go p.serve()
	return ln.Addr().String(), nil
}

// Addr is the address of name's proxy ("" if none).
func (n *FaultNet) Addr(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.proxies[name]; ok {
		return p.ln.Addr().String()
	}
	return ""
}

// Isolate cuts every link between name and the other servers.
func (n *FaultNet) Isolate(name string) {
	n.mu.Lock()
	var others []string
	for o := range n.proxies {
		if o != name {
			others = append(others, o)
		}
	}
	n.mu.Unlock()
	n.Cut(name, others...)
}

// Cut cuts the links between a and each of others: new connections are
// refused and open ones closed. When Cut returns, the proxies forward no
// more bytes on these links.
func (n *FaultNet) Cut(a string, others ...string) {
	n.mu.Lock()
	for _, b := range others {
		n.blocked[linkOf(a, b)] = true
	}
	var victims []*pipe
	for _, p := range n.proxies {
		p.mu.Lock()
		for c := range p.conns {
			if n.blocked[linkOf(c.from, c.to)] {
				victims = append(victims, c)
			}
		}
		p.mu.Unlock()
	}
	n.stats.Cut += len(victims)
	n.mu.Unlock()
	for _, c := range victims {
		c.close()
	}
}

// Heal restores every link.
func (n *FaultNet) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
}

// Blocked reports whether the link between a and b is cut.
func (n *FaultNet) Blocked(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[linkOf(a, b)]
}

// Stats returns the counters so far.
func (n *FaultNet) Stats() NetStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Close stops every proxy and closes every connection.
func (n *FaultNet) Close() {
	n.mu.Lock()
	n.closed = true
	ps := make([]*proxy, 0, len(n.proxies))
	for _, p := range n.proxies {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

// admit decides a new connection from source IP src to server to. from is
// the dialing server's name, "" when the source is no known server (such
// connections always pass).
func (n *FaultNet) admit(src, to string) (from string, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	from = n.byIP[src]
	if from != "" && n.blocked[linkOf(from, to)] {
		n.stats.Refused++
		return from, false
	}
	return from, true
}

func (n *FaultNet) count(f func(*NetStats)) {
	n.mu.Lock()
	f(&n.stats)
	n.mu.Unlock()
}

// proxy forwards connections to one server's Raft listener.
type proxy struct {
	net      *FaultNet
	name     string
	ln       net.Listener
	upstream func() (string, error)

	mu     sync.Mutex
	conns  map[*pipe]struct{}
	closed bool
	wg     sync.WaitGroup
}

// dialTimeout bounds a proxy's dial of its server.
const dialTimeout = 2 * time.Second

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *proxy) handle(c net.Conn) {
	src, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	from, ok := p.net.admit(src, p.name)
	if !ok {
		c.Close()
		return
	}
	addr, err := p.upstream()
	var up net.Conn
	if err == nil {
		up, err = net.DialTimeout("tcp", addr, dialTimeout)
	}
	if err != nil {
		p.net.count(func(s *NetStats) { s.Failed++ })
		c.Close()
		return
	}
	pp := &pipe{from: from, to: p.name, down: c, up: up}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pp.close()
		return
	}
	p.conns[pp] = struct{}{}
	p.mu.Unlock()
	// A cut may have happened between admit and registering the pipe.
	if from != "" && p.net.Blocked(from, p.name) {
		p.net.count(func(s *NetStats) { s.Refused++ })
		p.forget(pp)
		pp.close()
		return
	}
	p.net.count(func(s *NetStats) { s.Accepted++ })
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	pp.close()
	<-done
	p.forget(pp)
}

func (p *proxy) forget(pp *pipe) {
	p.mu.Lock()
	delete(p.conns, pp)
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	var all []*pipe
	for c := range p.conns {
		all = append(all, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range all {
		c.close()
	}
	p.wg.Wait()
}

// pipe is one proxied connection: down is the dialing server's side, up the
// proxied server's.
type pipe struct {
	from, to string
	down, up net.Conn
	once     sync.Once
}

func (c *pipe) close() {
	c.once.Do(func() {
		c.down.Close()
		c.up.Close()
	})
}
