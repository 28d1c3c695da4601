package session

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"time"

	"github.com/keymesh/keymesh/ca"
)

// writeTimeout bounds one write to a peer: a peer that does not read for
// that long is gone.
const writeTimeout = 10 * time.Second

// conn is one TLS connection with a peer, after its handshake: a writer
// goroutine drains a bounded queue of frames, a reader goroutine (started
// once the session takes the connection) turns frames into events.
type conn struct {
	id      uint64
	tc      *tls.Conn
	inbound bool
	peer    ca.Identity
	chain   []*x509.Certificate // the peer's verified chain
	local   *tls.Certificate    // what this side presented
	expires time.Time           // the earliest NotAfter of the peer's chain
	// memberships are the other networks the peer's OPEN names.
	memberships []string

	mu      sync.Mutex
	send    chan []byte // frames; one slot is kept for the NOTIFICATION before a close
	closing bool
	reading bool
	done    chan struct{} // closed when the writer has closed the connection
	pending bool          // counted in Speaker.pending (not established yet)
}

func newConn(id uint64, tc *tls.Conn, inbound bool, v verified, queue int) *conn {
	c := &conn{id: id, tc: tc, inbound: inbound, peer: v.peer, chain: v.chain, local: v.local,
		send: make(chan []byte, queue+1), done: make(chan struct{}), pending: true}
	for _, x := range v.chain {
		if c.expires.IsZero() || x.NotAfter.Before(c.expires) {
			c.expires = x.NotAfter
		}
	}
	go c.write()
	return c
}

// write sends the queued frames until the queue is closed, then closes the
// connection. onErr learns of a failed write.
func (c *conn) write() {
	defer close(c.done)
	defer c.tc.Close()
	for f := range c.send {
		c.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.tc.Write(f); err != nil {
			// The reader sees the connection fail and reports it.
			c.tc.Close()
			for range c.send {
			}
			return
		}
	}
}

// enqueue queues a frame; false if the queue is full (the peer does not
// read fast enough) or the connection is closing.
func (c *conn) enqueue(f []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || len(c.send) >= cap(c.send)-1 {
		return false
	}
	c.send <- f
	return true
}

// finish queues a last frame (a NOTIFICATION, in the kept slot), if any,
// and closes the connection once it is written (or the write times out).
func (c *conn) finish(last []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing = true
	if last != nil && len(c.send) < cap(c.send) {
		c.send <- last
	}
	close(c.send)
}

// startReading reports whether the reader should be started now (once).
func (c *conn) startReading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading || c.closing {
		return false
	}
	c.reading = true
	return true
}
