package cluster

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// echoServer accepts Raft stream connections and echoes four bytes at a
// time on each; every accepted connection is sent on the returned channel
// once its handshake completed.
func echoServer(t *testing.T, sl *streamLayer) <-chan *handshakeConn {
	t.Helper()
	accepted := make(chan *handshakeConn, 8)
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			hc := c.(*handshakeConn)
			go func() {
				defer hc.Close()
				if hc.handshake() != nil {
					return
				}
				accepted <- hc
				buf := make([]byte, 4)
				for {
					if _, err := io.ReadFull(hc, buf); err != nil {
						return
					}
					if _, err := hc.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return accepted
}

func exchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q: %q %v", msg, buf, err)
	}
}

// TestDialledConnRedialsAClosedPeer: a request on a pooled connection
// whose peer has closed it, cleanly (TLS close_notify, a stopped process)
// or not (the socket alone, a killed one), goes out on a new connection; a
// live connection is kept.
func TestDialledConnRedialsAClosedPeer(t *testing.T) {
	needPeek(t)
	pki := newTestPKI(t, "a.example")
	srv := dialer(t, pki.rootServer("r1"))
	accepted := echoServer(t, srv)
	cli := dialer(t, pki.rootServer("r2"))

	cases := []struct {
		name  string
		close func(*handshakeConn)
	}{
		{"close_notify", func(c *handshakeConn) { c.Close() }},
		{"socket closed", func(c *handshakeConn) { c.NetConn().Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cli.Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			exchange(t, c, "ping")
			first := <-accepted
			exchange(t, c, "live") // a live connection is kept
			select {
			case <-accepted:
				t.Fatal("a live connection was dialled again")
			default:
			}

			tc.close(first)
			// The close is on its way; the check must see it once it is
			// there. Wait for it on a connection of the test's own.
			awaitPeerClosed(t, c.(*redialConn).conn())
			exchange(t, c, "pong")
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("the request did not go out on a new connection")
			}
			if r := c.(*redialConn).redials; r != 1 {
				t.Fatalf("redials = %d, want 1", r)
			}
		})
	}

	t.Run("peer gone for good", func(t *testing.T) {
		gone := dialer(t, pki.rootServer("r3"))
		acc := echoServer(t, gone)
		c, err := cli.Dial(raft.ServerAddress(gone.Addr().String()), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange(t, c, "ping")
		hc := <-acc
		gone.Close()
		hc.Close()
		awaitPeerClosed(t, c.(*redialConn).conn())
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("pong")); err == nil {
			t.Fatal("a write to a closed port succeeded")
		}
	})
}

func needPeek(t *testing.T) {
	if !canPeek {
		t.Skip("this platform cannot look at a socket's receive queue")
	}
}

// awaitPeerClosed waits until the socket of c shows its peer's close.
func awaitPeerClosed(t *testing.T, c interface{ NetConn() net.Conn }) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !peerHasClosed(c.NetConn()) {
		if time.Now().After(deadline) {
			t.Fatal("the peer's close never reached the socket")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestVoteRequestReachesARestartedPeer: Raft's transport asks a peer for
// its vote, the peer's process stops and a new one listens on the same
// address; the next vote request reaches the new process at the first try
// (over the pooled connection to the old one it failed with EOF).
func TestVoteRequestReachesARestartedPeer(t *testing.T) {
	needPeek(t)
	pki := newTestPKI(t, "a.example")
	newTrans := func(addr, name string) (*raft.NetworkTransport, *streamLayer) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		sl := newStreamLayer(ln, "", pki.rootServer(name))
		tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: sl, MaxPool: 4, Timeout: 5 * time.Second,
			Logger: hclog.NewNullLogger(), MaxRPCsInFlight: 1,
		})
		go func() {
			for rpc := range tr.Consumer() {
				rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil)
			}
		}()
		return tr, sl
	}
	a, as := newTrans("127.0.0.1:0", "r1")
	defer a.Close()
	b, bs := newTrans("127.0.0.1:0", "r2")
	addr := b.LocalAddr()
	vote := func() error {
		var resp raft.RequestVoteResponse
		err := a.RequestVote("r2", addr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("r1"), Addr: []byte(a.LocalAddr())}, Term: 1}, &resp)
		if err == nil && !resp.Granted {
			err = errors.New("vote not granted")
		}
		return err
	}
	if err := vote(); err != nil {
		t.Fatal(err)
	}
	// The process ends: its listener and every connection close.
	b.Close()
	bs.mu.Lock()
	for c := range bs.conns {
		c.Close()
	}
	bs.mu.Unlock()
	as.mu.Lock()
	pooled := make([]*tls.Conn, 0, len(as.conns))
	for c := range as.conns {
		pooled = append(pooled, c)
	}
	as.mu.Unlock()
	for _, c := range pooled {
		awaitPeerClosed(t, c)
	}
	b, _ = newTrans(string(addr), "r2")
	defer b.Close()
	if err := vote(); err != nil {
		t.Fatalf("vote request to the restarted peer: %v", err)
	}
}

// TestOpenConnectionsFromAPeer: the stream layer knows whether a
// connection from a root server is open or was opened after a time, and
// reports the ends the peer caused (not closes here) to onClosed.
func TestOpenConnectionsFromAPeer(t *testing.T) {
	pki := newTestPKI(t, "a.example")
	srv := dialer(t, pki.rootServer("r1"))
	ended := make(chan string, 4)
	srv.onClosed(func(peer string) { ended <- peer })
	accepted := echoServer(t, srv)
	cli := dialer(t, pki.rootServer("r2"))
	before := time.Now()
	var conns []net.Conn
	var server []*handshakeConn
	for _, msg := range []string{"one!", "two!", "3333"} {
		c, err := cli.Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange(t, c, msg)
		conns = append(conns, c)
		server = append(server, <-accepted)
	}
	open := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.open["r2"].open
	}
	if n := open(); n != 3 || !srv.openFrom("r2", time.Now()) {
		t.Fatalf("open from r2 = %d, want 3", n)
	}
	conns[0].Close()
	if p := <-ended; p != "r2" {
		t.Fatalf("ended reported peer %q, want r2", p)
	}
	server[1].Close()
	server[1].Close()
	select {
	case p := <-ended:
		t.Fatalf("a close here was reported as the peer's end (%q)", p)
	default:
	}
	if n := open(); n != 1 {
		t.Fatalf("after one end and one close here: open from r2 = %d, want 1", n)
	}
	conns[2].Close()
	<-ended
	if n := open(); n != 0 {
		t.Fatalf("all closed: open from r2 = %d", n)
	}
	if srv.openFrom("r2", time.Now()) {
		t.Error("r2 counts as open with every connection closed and none opened since")
	}
	if !srv.openFrom("r2", before) {
		t.Error("r2's connections opened after before do not count")
	}
	if srv.openFrom("r3", before) {
		t.Error("r3 counts as open")
	}
}
