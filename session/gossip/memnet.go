package gossip

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemNetwork is an in-memory network for memberlist: the twin of UDP and
// TCP for tests and simulations. Transports may be added while others
// run; a packet to a full or gone transport is lost (as a datagram is), a
// stream to a gone one fails to dial.
type MemNetwork struct {
	mu     sync.Mutex
	byAddr map[string]*MemTransport
	port   int
	// Cut, if set, says whether packets and streams from one address to
	// another are lost (a partition).
	Cut func(from, to string) bool

	packets, bytes, streams atomic.Uint64 // sent
}

// Sent is what the network carried: packets and their bytes, streams.
func (n *MemNetwork) Sent() (packets, bytes, streams uint64) {
	return n.packets.Load(), n.bytes.Load(), n.streams.Load()
}

// MemTransport is one member's end of a MemNetwork.
type MemTransport struct {
	net     *MemNetwork
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

// NewTransport adds a transport with a fresh 127.0.0.1 address.
func (n *MemNetwork) NewTransport() *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = map[string]*MemTransport{}
	}
	n.port++
	t := &MemTransport{net: n, addr: fmt.Sprintf("127.0.0.1:%d", n.port), packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64), done: make(chan struct{})}
	n.byAddr[t.addr] = t
	return t
}

func (n *MemNetwork) peer(from, to string) (*MemTransport, bool) {
	n.mu.Lock()
	t, ok := n.byAddr[to]
	cut := n.Cut
	n.mu.Unlock()
	if !ok || cut != nil && cut(from, to) {
		return nil, false
	}
	return t, true
}

// Addr is the transport's address.
func (t *MemTransport) Addr() string { return t.addr }

func (t *MemTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	var p int
	fmt.Sscan(port, &p)
	return net.ParseIP(host), p, nil
}

func (t *MemTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	dest, ok := t.net.peer(t.addr, addr)
	if !ok {
		return now, nil // lost, as a datagram
	}
	t.net.packets.Add(1)
	t.net.bytes.Add(uint64(len(b)))
	select {
	case dest.packets <- &memberlist.Packet{Buf: append([]byte(nil), b...), From: memAddr(t.addr), Timestamp: now}:
	case <-dest.done:
	default:
	}
	return now, nil
}

func (t *MemTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *MemTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dest, ok := t.net.peer(t.addr, addr)
	if !ok {
		return nil, fmt.Errorf("mem: no route to %s", addr)
	}
	t.net.streams.Add(1)
	a, b := net.Pipe()
	select {
	case dest.streams <- b:
		// A pipe has no buffer, as a TCP socket has: a write before the
		// other side reads (memberlist's label header) must not block a
		// dialler for good when the other side never runs.
		a.SetWriteDeadline(time.Now().Add(timeout))
		return a, nil
	case <-dest.done:
	case <-time.After(timeout):
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("mem: %s does not answer", addr)
}

func (t *MemTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown takes the transport off the network.
func (t *MemTransport) Shutdown() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		delete(t.net.byAddr, t.addr)
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}

var _ memberlist.Transport = (*MemTransport)(nil)
