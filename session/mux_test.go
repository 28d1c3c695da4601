package session

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/session/memnet"
)

// muxCert is a self-signed server certificate for the names the Mux test
// dials by, and a pool that trusts it.
func muxCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mux test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"a.example", "b.example", "unknown.example"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	leaf, err := x509.ParseCertificate(der)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestMux: each connection reaches the listener of the network its hello
// names, the default one without a name or with one of no member network,
// and its TLS handshake completes over the bytes the Mux read; what is not
// a hello, or comes too slowly or past MaxPending, is closed.
func TestMux(t *testing.T) {
	mn := memnet.New()
	ln, err := mn.Listen("node:179")
	must(t, err)
	mux := NewMux(ln, MuxConfig{Default: "a.example", MaxPending: 2, HelloTimeout: 200 * time.Millisecond})
	subs := map[string]net.Listener{"a.example": mux.Listener("a.example"), "b.example": mux.Listener("b.example")}
	if mux.Listener("a.example") != subs["a.example"] {
		t.Fatal("a second Listener call made another listener")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mux: %v", err)
		}
		if _, err := subs["b.example"].Accept(); err == nil {
			t.Error("a network's listener accepts after the Mux stopped")
		}
	}()

	cert, pool := muxCert(t)
	got := make(chan string, 8)
	for name, l := range subs {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
				if err := tc.Handshake(); err != nil {
					got <- "handshake failed: " + err.Error()
					continue
				}
				tc.Write([]byte(name))
			}
		}()
	}
	dial := func(src string) net.Conn {
		nc, err := mn.Dialer(src)(context.Background(), ln.Addr().String())
		must(t, err)
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	for _, c := range []struct{ sni, want string }{
		{"b.example", "b.example"},
		{"a.example", "a.example"},
		{"127.0.0.1", "a.example"}, // an IP: no server name is sent
		{"unknown.example", "a.example"},
	} {
		nc := dial("client")
		tc := tls.Client(nc, &tls.Config{ServerName: c.sni, RootCAs: pool, MinVersion: tls.VersionTLS13})
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("%s: %v", c.sni, err)
		}
		b := make([]byte, 32)
		n, err := tc.Read(b)
		if err != nil {
			select {
			case msg := <-got:
				t.Fatalf("%s: %v (%s)", c.sni, err, msg)
			default:
			}
			t.Fatalf("%s: %v", c.sni, err)
		}
		if string(b[:n]) != c.want {
			t.Errorf("hello naming %q reached %s, want %s", c.sni, b[:n], c.want)
		}
	}

	closedByMux := func(nc net.Conn, what string) {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("%s: %v, want the Mux to close it", what, err)
		}
	}
	dropped := mux.Dropped()
	garbage := dial("garbage")
	garbage.Write([]byte("GET / HTTP/1.1\r\nHost: node\r\n\r\n"))
	closedByMux(garbage, "not TLS")
	closedByMux(dial("silent"), "no hello within HelloTimeout")
	// A hello in endless fragments: closed once past what the Mux reads.
	big := dial("big")
	go func() {
		hs := []byte{1, 0xFF, 0xFF, 0xFF} // a ClientHello of 16 MiB
		rec := func(b []byte) []byte { return append([]byte{22, 3, 1, byte(len(b) >> 8), byte(len(b))}, b...) }
		big.Write(rec(append(hs, bytes.Repeat([]byte{0}, 16000)...)))
		for i := 0; i < 8; i++ {
			if _, err := big.Write(rec(bytes.Repeat([]byte{0}, 16000))); err != nil {
				return
			}
		}
	}()
	closedByMux(big, "a hello past 64 KiB")
	if d := mux.Dropped() - dropped; d != 3 {
		t.Errorf("Dropped counted %d, want 3", d)
	}

	// Past MaxPendingPerSource (2), a source's third connection is
	// closed at once; past MaxPending (3), a new one closes the oldest
	// whose hello is still unread.
	mux2 := NewMux(mustListen(t, mn, "node2:179"), MuxConfig{Default: "a.example", MaxPending: 3, MaxPendingPerSource: 2, HelloTimeout: time.Minute})
	go mux2.Run(ctx)
	d2 := func(src string) net.Conn {
		nc, err := mn.Dialer(src)(context.Background(), "node2:179")
		must(t, err)
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	oldest := d2("s1")
	d2("s1")
	thirdOfS1 := d2("s1")
	closedByMux(thirdOfS1, "the connection past MaxPendingPerSource")
	d2("s2")
	d2("s3") // the fourth: s1's first makes room
	closedByMux(oldest, "the oldest unread connection past MaxPending")
	if mux2.Dropped() != 2 {
		t.Errorf("mux2 dropped %d, want 2", mux2.Dropped())
	}
	// Sources: an IPv6 host's /64, an IPv4 address.
	for in, want := range map[string]string{"[2001:db8:1:2:3::4]:179": "2001:db8:1:2::/64", "192.0.2.7:179": "192.0.2.7", "[::ffff:192.0.2.7]:179": "192.0.2.7"} {
		addr, err := net.ResolveTCPAddr("tcp", in)
		must(t, err)
		if got := muxSource(addr); got != want {
			t.Errorf("muxSource(%s) = %s, want %s", in, got, want)
		}
	}
}

func mustListen(t *testing.T, mn *memnet.Network, addr string) net.Listener {
	t.Helper()
	ln, err := mn.Listen(addr)
	must(t, err)
	return ln
}

// FuzzPeekServerName: whatever a connection sends first, the peek
// returns an error or a server name and a connection that reads the
// same bytes again from the start; it never panics or writes.
func FuzzPeekServerName(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add(clientHello(f, "a.example"))
	f.Add(clientHello(f, "127.0.0.1")) // an IP: no server name
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			b.Write(in)
			b.Close()
		}()
		name, c, err := PeekServerName(a, time.Second)
		if err != nil {
			return
		}
		if len(name) > 255 {
			t.Fatalf("a server name of %d bytes", len(name))
		}
		got, _ := io.ReadAll(c)
		if !bytes.Equal(got, in) {
			t.Fatalf("the replayed connection reads %d bytes, %d were sent", len(got), len(in))
		}
	})
}

// clientHello is what a TLS 1.3 client sends first, naming sni.
func clientHello(f *testing.F, sni string) []byte {
	f.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{ServerName: sni, MinVersion: tls.VersionTLS13}).Handshake() // the hello alone is used
		a.Close()
	}()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, _ := b.Read(buf)
	b.Close()
	return buf[:n]
}
