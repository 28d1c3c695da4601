package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/test/benchlimit"
)

// tcpConfig is n's speaker configuration over loopback TCP.
func (n *testNode) tcpConfig(t testing.TB, peers ...PeerConfig) Config {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := n.config(peers...)
	cfg.Listener, cfg.Dial = ln, nil
	cfg.Limits.ConnRate, cfg.Limits.ConnBurst = 1e6, 1e6
	return cfg
}

// bareTLS is one mutual TLS 1.3 handshake over loopback TCP between the
// certificates of a (client) and b (server), verified as crypto/tls does
// (the root, the host name, the client's chain), and its close.
func bareTLS(b testing.TB, m *testMesh, a, s *testNode, ln net.Listener) {
	pool := x509.NewCertPool()
	pool.AddCert(m.root.Cert)
	ca, _ := a.Certificate()
	cs, _ := s.Certificate()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		tc := tls.Server(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cs}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{ALPN}})
		err = tc.Handshake()
		tc.Close()
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	tc := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*ca}, RootCAs: pool,
		ServerName: s.id + "." + m.network, NextProtos: []string{ALPN}})
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	tc.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEstablish: one full session establishment over loopback TCP
// (TCP, mutual TLS 1.3 verified against the trust view, both OPENs'
// tokens minted and verified, Cedar on both sides, the KEEPALIVEs) against
// its limit, a bare mutual TLS 1.3 handshake with the same keys. Aim:
// ratio >= 0.7.
func BenchmarkEstablish(b *testing.B) {
	m := newTestMesh(b)
	a, s := m.node("a"), m.node("b")
	cs := s.tcpConfig(b)
	s.start(cs)
	a.start(a.tcpConfig(b, PeerConfig{ID: "b", Addr: cs.Listener.Addr().String()}))
	a.handler.waitUp(b)
	s.handler.waitUp(b)
	bare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	benchlimit.Versus(b, "bare-mtls", 1, func() {
		if err := a.speaker.Reset("b"); err != nil {
			b.Fatal(err)
		}
		a.handler.waitDown(b)
		s.handler.waitDown(b)
		a.handler.waitUp(b)
		s.handler.waitUp(b)
	}, func() { bareTLS(b, m, a, s, bare) })
}

// BenchmarkMuxHandshake: a bare mutual TLS 1.3 handshake over loopback
// TCP taken through a Mux (its hello read, then replayed to the network's
// listener) against the same handshake on the listener itself. Aim:
// ratio >= 0.9 (the peek is a second parse of one ClientHello).
func BenchmarkMuxHandshake(b *testing.B) {
	m := newTestMesh(b)
	a, s := m.node("a"), m.node("b")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := NewMux(ln, MuxConfig{Default: m.network})
	sub := mux.Listener(m.network)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	bare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	benchlimit.Versus(b, "bare-mtls", 1, func() { bareTLS(b, m, a, s, sub) }, func() { bareTLS(b, m, a, s, bare) })
}

// cpu is the process's user and system time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawIdle is the physical limit of idle sessions: n mutual TLS 1.3
// connections over loopback TCP between the certificates of a and s, each
// end writing an 8-byte record every interval (from a ticker started at a
// random phase) and reading the other's. It returns the records read so
// far and a close.
func rawIdle(b testing.TB, m *testMesh, a, s *testNode, n int, interval time.Duration) (received func() uint64, closeIt func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(m.root.Cert)
	ca, _ := a.Certificate()
	cs, _ := s.Certificate()
	var count atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var conns []*tls.Conn
	var mu sync.Mutex
	run := func(c *tls.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		msg := AppendFrame(nil, MsgKeepalive, nil)
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				count.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			select {
			case <-time.After(rand.N(interval)):
			case <-stop:
				return
			}
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				if _, err := c.Write(msg); err != nil {
					return
				}
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
		}()
	}
	accepted := make(chan error, 1)
	go func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			tc := tls.Server(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cs}, ClientCAs: pool,
				ClientAuth: tls.RequireAndVerifyClientCert})
			if err := tc.Handshake(); err != nil {
				accepted <- err
				return
			}
			run(tc)
		}
		accepted <- nil
	}()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*ca}, RootCAs: pool,
			ServerName: s.id + "." + m.network})
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		run(tc)
	}
	if err := <-accepted; err != nil {
		b.Fatal(err)
	}
	return count.Load, func() {
		close(stop)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
		wg.Wait()
	}
}

// waitCount waits until count() reaches want, polling (the keepalives come
// by the clock), for at most limit.
func waitCount(b *testing.B, count func() uint64, want uint64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for count() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d keepalives arrived", count(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bigRecorder is a recorder whose channels hold size events, so that no
// session waits on the benchmark to take its news.
func bigRecorder(size int) *recorder {
	return &recorder{up: make(chan string, size), down: make(chan string, size), updates: make(chan []byte, size), refresh: make(chan string, size)}
}

// BenchmarkIdleSessions: SESSION_BENCH_N (default 1,000) idle sessions,
// each of its own node dialling one hub over loopback TCP, with a hold
// time of 3 s (a KEEPALIVE each way every second). One iteration is one
// round of keepalives. It reports the memory an idle session holds at
// each end (heap and goroutine stacks; aim <= 64 KiB), the CPU per
// KEEPALIVE sent and received against the limit (an 8-byte TLS record
// written and read), and what the keepalives of 1,000 sessions at the
// default hold time (30 s) cost a core.
func BenchmarkIdleSessions(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("SESSION_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	m := newTestMesh(b)
	hub := m.node("hub")
	hub.handler = bigRecorder(2 * n)
	hc := hub.tcpConfig(b)
	hc.HoldTime = 3 * time.Second
	hc.Limits.MaxPending = n + 16
	hub.start(hc)
	addr := hc.Listener.Addr().String()

	// The limit first, alone: as many bare TLS connections, idle for as
	// long, each end writing a record a second.
	b.StopTimer()
	rawReceived, closeRaw := rawIdle(b, m, hub, m.node("raw"), n, time.Second)
	r0, rc0 := rawReceived(), cpu()
	waitCount(b, rawReceived, r0+uint64(2*b.N*n), time.Duration(b.N+3)*time.Second)
	rawUsed := cpu() - rc0
	closeRaw()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var nodes []*testNode
	for i := range n {
		nd := m.node(fmt.Sprintf("n%d", i))
		nd.handler = bigRecorder(4)
		cfg := nd.config(PeerConfig{ID: "hub", Addr: addr})
		cfg.Listener, cfg.Dial, cfg.HoldTime = nil, nil, 3*time.Second
		nd.ln = nil
		nd.start(cfg)
		nodes = append(nodes, nd)
	}
	for range n {
		hub.handler.waitUp(b)
	}
	for _, nd := range nodes {
		nd.handler.waitUp(b)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perEnd := float64((after.HeapInuse+after.StackInuse)-(before.HeapInuse+before.StackInuse)) / float64(2*n)

	received := func() uint64 {
		return hub.speaker.Metrics().Count(metricMessages, `direction="received",type="KEEPALIVE"`)
	}
	// A round: every session's node sends the hub one KEEPALIVE a second,
	// and the hub one to each node.
	b.ResetTimer()
	c0, k0 := cpu(), received()
	waitCount(b, received, k0+uint64(b.N*n), time.Duration(b.N+3)*time.Second)
	used := cpu() - c0
	b.StopTimer()

	// Each round carries a keepalive each way of every session.
	keepalives := float64(2 * n * b.N)
	perKeepalive := float64(used.Nanoseconds()) / keepalives
	rawPer := float64(rawUsed.Nanoseconds()) / keepalives
	b.ReportMetric(perEnd, "B/session-end")
	b.ReportMetric(perKeepalive, "cpu-ns/keepalive")
	b.ReportMetric(rawPer, "raw-cpu-ns/record")
	b.ReportMetric(rawPer/perKeepalive, "ratio")
	// 1,000 sessions at the default hold time (30 s): 2,000 keepalives
	// each 10 s.
	b.ReportMetric(perKeepalive*2000/10/1e9*100, "core-%/1k-default")
}
