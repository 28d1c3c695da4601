package rtr

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, l.Addr().String()
}

type router struct {
	t *testing.T
	c net.Conn
	r *Reader
}

func dial(t *testing.T, addr string) *router {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &router{t: t, c: c, r: NewReader(c, 1<<20)}
}

func (r *router) send(p PDU) {
	r.t.Helper()
	if _, err := r.c.Write(p.Append(nil)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *router) read() PDU {
	r.t.Helper()
	p, err := r.r.Read()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return p
}

// until reads PDUs up to one of type typ, returning those before it.
func (r *router) until(typ uint8) (PDU, []PDU) {
	r.t.Helper()
	var got []PDU
	for {
		p := r.read()
		if p.Type == typ {
			return p, got
		}
		got = append(got, p)
	}
}

func (r *router) closed() {
	r.t.Helper()
	if _, err := r.r.ReadRaw(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		r.t.Fatalf("read %v, want the connection closed", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

var pfx = netip.MustParsePrefix

func TestServerSession(t *testing.T) {
	c := NewCache("test.example.net", 0)
	c.Load(10, []VRP{{pfx("10.0.0.0/8"), 24, 64500}, {pfx("2001:db8::/32"), 48, 64500}})
	s, addr := startServer(t, Config{Cache: c})
	r := dial(t, addr)
	r.send(PDU{Version: 1, Type: TypeResetQuery})
	eod, got := r.until(TypeEndOfData)
	if len(got) != 3 || got[0].Type != TypeCacheResponse || eod.Serial != 10 || eod.Refresh != DefaultTimers.Refresh {
		t.Fatalf("reset answer %v, end of data %v", got, eod.String())
	}
	c.Update(12, map[netip.Prefix][]VRP{pfx("10.0.0.0/8"): nil, pfx("192.0.2.0/24"): {{pfx("192.0.2.0/24"), 24, 64501}}})
	n := r.read()
	if n.Type != TypeSerialNotify || n.Serial != 12 || n.Session != eod.Session {
		t.Fatalf("after the change: %s, want a serial notify of 12", n.String())
	}
	r.send(PDU{Version: 1, Type: TypeSerialQuery, Session: eod.Session, Serial: eod.Serial})
	eod2, got := r.until(TypeEndOfData)
	if len(got) != 3 || got[1].Announce || !got[2].Announce || got[2].Prefix != pfx("192.0.2.0/24") || eod2.Serial != 12 {
		t.Fatalf("delta %v", got)
	}
	if s.Routers() != 1 {
		t.Errorf("Routers %d, want 1", s.Routers())
	}
	var m bytes.Buffer
	s.WriteMetrics(&m)
	for _, want := range []string{`keymesh_rtr_queries_total{kind="reset"} 1`, `keymesh_rtr_queries_total{kind="serial"} 1`,
		"keymesh_rtr_notifies_total 1", "keymesh_rtr_serial 12", "keymesh_rtr_vrps 2", "keymesh_rtr_routers 1"} {
		if !strings.Contains(m.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.String())
		}
	}
}

// TestServerLimits exceeds each limit: routers beyond MaxRouters are
// closed at accept; a PDU past MaxPDU is answered with an Error Report
// and the end of the session; a PDU begun and not finished, and a silent
// router, are cut at their deadlines.
func TestServerLimits(t *testing.T) {
	c := NewCache("test.example.net", 0)
	c.Load(1, nil)
	s, addr := startServer(t, Config{Cache: c, MaxRouters: 2, MaxPDU: 512, PDUTimeout: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		FirstQueryTimeout: 150 * time.Millisecond})

	t.Run("max routers", func(t *testing.T) {
		a, b := dial(t, addr), dial(t, addr)
		for _, r := range []*router{a, b} {
			r.send(PDU{Version: 1, Type: TypeResetQuery})
			r.until(TypeEndOfData)
		}
		dial(t, addr).closed()
		var m bytes.Buffer
		s.WriteMetrics(&m)
		if !strings.Contains(m.String(), "keymesh_rtr_refused_total 1") {
			t.Errorf("metrics:\n%s", m.String())
		}
		a.c.Close()
		b.c.Close()
	})
	waitRouters(t, s, 0)

	t.Run("oversized", func(t *testing.T) {
		r := dial(t, addr)
		r.c.Write(unhex(t, "01 02 0000 00000400"))
		p := r.read()
		if p.Type != TypeErrorReport || p.Code != CodeCorruptData || len(p.Encapsulated) != headerLen {
			t.Fatalf("got %s", p.String())
		}
		r.closed()
	})
	t.Run("pdu deadline", func(t *testing.T) {
		r := dial(t, addr)
		r.c.Write([]byte{1, 2, 0})
		r.closed()
	})
	t.Run("first query deadline", func(t *testing.T) {
		r := dial(t, addr)
		start := time.Now()
		r.closed()
		if d := time.Since(start); d > 290*time.Millisecond {
			t.Errorf("a silent new connection held for %s, past the first-query deadline", d)
		}
	})
	t.Run("idle deadline", func(t *testing.T) {
		r := dial(t, addr)
		r.send(PDU{Version: 1, Type: TypeResetQuery})
		r.until(TypeEndOfData)
		r.closed()
	})
}

// waitRouters polls the count of a real server's sessions, which end
// when their goroutine sees the close.
func waitRouters(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Routers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d routers connected, want %d", s.Routers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTimersCheck(t *testing.T) {
	for _, bad := range []Timers{{0, 600, 7200}, {3600, 0, 7200}, {3600, 600, 599}, {86401, 600, 172800}, {3600, 7201, 7200}, {7200, 600, 7200}} {
		if err := bad.Check(); !errors.Is(err, ErrTimers) {
			t.Errorf("%+v: %v", bad, err)
		}
		if _, err := NewServer(Config{Cache: NewCache("x", 0), Timers: bad}); !errors.Is(err, ErrTimers) {
			t.Errorf("NewServer %+v: %v", bad, err)
		}
	}
	if err := DefaultTimers.Check(); err != nil {
		t.Error(err)
	}
}

func TestCacheHistoryAndWrap(t *testing.T) {
	c := NewCache("n.example.net", 3)
	c.Load(1<<32-2, []VRP{{pfx("10.0.0.0/8"), 8, 1}})
	s1 := SessionID("n.example.net", 1<<32-2)
	c.Update(1<<32-1, map[netip.Prefix][]VRP{pfx("10.1.0.0/16"): {{pfx("10.1.0.0/16"), 16, 1}}})
	if _, a := c.appendDelta(nil, 1, s1, uint32(1<<32-2)); !a.found {
		t.Fatal("delta within one span not served")
	}
	// the index passes 2^32: a new session id, the history starts anew
	c.Update(1<<32+1, map[netip.Prefix][]VRP{pfx("10.2.0.0/16"): {{pfx("10.2.0.0/16"), 16, 1}}})
	s2 := SessionID("n.example.net", 1<<32+1)
	if s1 == s2 {
		t.Fatal("the session id did not change at the wrap")
	}
	if _, a := c.appendDelta(nil, 1, s1, uint32(1<<32-1)); a.found {
		t.Fatal("a serial of the old session was served")
	}
	if _, a := c.appendDelta(nil, 1, s2, 1); !a.found {
		t.Fatal("the current serial was not found")
	}
	// a load of the same set keeps the serial: no change to tell of
	c.Load(1<<32+2, c.VRPs())
	if _, serial, _ := c.State(); serial != 1<<32+1 {
		t.Fatalf("an unchanged load moved the serial to %d", serial)
	}
	if got := len(c.VRPs()); got != 3 {
		t.Fatalf("%d VRPs, want 3", got)
	}
	// older serials than the current are ignored
	c.Load(5, nil)
	if _, serial, n := c.State(); serial != 1<<32+1 || n != 3 {
		t.Fatalf("an older load was taken: serial %d, %d VRPs", serial, n)
	}
}

// TestServerWriteDeadline: a router that asks for everything and does not
// read is cut at the write deadline; the server does not wait on it.
func TestServerWriteDeadline(t *testing.T) {
	c := NewCache("test.example.net", 0)
	c.Load(1, vrpsN(400_000)) // 10 MB: more than the socket buffers hold
	s, addr := startServer(t, Config{Cache: c, WriteTimeout: 200 * time.Millisecond})
	r := dial(t, addr)
	r.c.(*net.TCPConn).SetReadBuffer(4096)
	r.send(PDU{Version: 1, Type: TypeResetQuery})
	waitRouters(t, s, 1)
	waitRouters(t, s, 0)
}

// flakyListener fails its first accepts as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errors.New("too many open files")}
	}
	return l.Listener.Accept()
}

// TestServerAcceptErrors: an accept error other than the listener's close
// pauses the server; it goes on serving after.
func TestServerAcceptErrors(t *testing.T) {
	c := NewCache("test.example.net", 0)
	c.Load(1, nil)
	s, err := NewServer(Config{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(&flakyListener{Listener: l, fails: 3}) }()
	r := dial(t, l.Addr().String())
	r.send(PDU{Version: 1, Type: TypeResetQuery})
	r.until(TypeEndOfData)
	s.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestFullAnswerConsistent: a full answer's VRPs are those of the serial
// its End of Data names, while changes land between its reads (each
// serial k holds k VRPs here).
func TestFullAnswerConsistent(t *testing.T) {
	c := NewCache("test.example.net", 0)
	c.Load(1, vrpsN(1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		all := vrpsN(400)
		for k := 2; k <= 400; k++ {
			v := all[k-1]
			c.Update(uint64(k), map[netip.Prefix][]VRP{v.Prefix: {v}})
		}
	}()
	for i := 0; ; i++ {
		m := newMachine(c, DefaultTimers)
		res := m.receive((&PDU{Version: 1, Type: TypeResetQuery}).Append(nil), nil)
		r := NewReader(bytes.NewReader(res.bytes()), 1<<20)
		n := 0
		for {
			p, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			if p.Type == TypeIPv4Prefix || p.Type == TypeIPv6Prefix {
				n++
			}
			if p.Type == TypeEndOfData {
				if uint32(n) != p.Serial {
					t.Fatalf("answer %d: %d VRPs with serial %d", i, n, p.Serial)
				}
				break
			}
		}
		select {
		case <-done:
			return
		default:
		}
	}
}
