package harness

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Relay forwards TCP connections from a loopback port to a target: the
// road from a site to a root server's API (agents run with --server at
// the relay and --pin-servers). Cut ends every connection it carries and
// refuses new ones (the site cut off from the roots); Mend lets them
// through again.
type Relay struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// NewRelay listens on a loopback port for target until the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go r.serve()
	t.Cleanup(func() { ln.Close(); r.Cut() })
	return r
}

// Addr is where the relay listens.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut ends the connections and refuses new ones until Mend.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = true
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
}

// Mend lets connections through again.
func (r *Relay) Mend() {
	r.mu.Lock()
	r.cut = false
	r.mu.Unlock()
}

func (r *Relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *Relay) serve() {
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", r.target)
			if err != nil {
				in.Close()
				return
			}
			if !r.track(in, out) {
				in.Close()
				out.Close()
				return
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) { io.Copy(dst, src); dst.Close(); src.Close(); done <- struct{}{} }
			go pipe(out, in)
			go pipe(in, out)
			<-done
			<-done
			r.mu.Lock()
			delete(r.conns, in)
			delete(r.conns, out)
			r.mu.Unlock()
		}()
	}
}
