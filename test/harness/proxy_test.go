package harness

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every line with the same line, on ip.
func echoServer(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialFrom connects to addr from source IP src.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

// roundTrip sends a line and reads it back.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("echo answered " + line)
	}
	return nil
}

// newNet makes three servers a, b, c with source IPs 127.0.0.201-203, each
// behind its proxy, and returns the net and the proxies' addresses.
func newNet(t *testing.T) (*FaultNet, map[string]string) {
	t.Helper()
	n := NewFaultNet()
	t.Cleanup(n.Close)
	addrs := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		ip := srcIP[name]
		up := echoServer(t, ip)
		addr, err := n.Add(name, ip, func() (string, error) { return up, nil })
		if err != nil {
			t.Fatal(err)
		}
		addrs[name] = addr
	}
	return n, addrs
}

var srcIP = map[string]string{"a": "127.0.0.201", "b": "127.0.0.202", "c": "127.0.0.203"}

func TestFaultNetForwardsAndCuts(t *testing.T) {
	n, addrs := newNet(t)
	open := func(from, to string) net.Conn {
		t.Helper()
		c, err := dialFrom(srcIP[from], addrs[to])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ab := open("a", "b")
	ba := open("b", "a")
	bc := open("b", "c")
	for _, c := range []net.Conn{ab, ba, bc} {
		if err := roundTrip(c); err != nil {
			t.Fatalf("before any cut: %v", err)
		}
	}

	n.Isolate("a")
	if !n.Blocked("a", "b") || !n.Blocked("c", "a") || n.Blocked("b", "c") {
		t.Fatal("Isolate(a) must cut a-b and a-c and nothing else")
	}
	for name, c := range map[string]net.Conn{"a->b": ab, "b->a": ba} {
		if err := roundTrip(c); err == nil {
			t.Errorf("%s: open connection still carries bytes after the cut", name)
		}
	}
	if err := roundTrip(bc); err != nil {
		t.Errorf("b->c must survive isolating a: %v", err)
	}
	for _, l := range [][2]string{{"a", "b"}, {"c", "a"}} {
		c := open(l[0], l[1])
		if err := roundTrip(c); err == nil {
			t.Errorf("%s->%s: new connection passes a cut link", l[0], l[1])
		}
	}
	st := n.Stats()
	if st.Cut < 2 || st.Refused < 2 {
		t.Errorf("stats %+v: want at least 2 cut and 2 refused", st)
	}

	n.Heal()
	if err := roundTrip(open("a", "b")); err != nil {
		t.Errorf("after Heal: %v", err)
	}
	if err := roundTrip(open("c", "a")); err != nil {
		t.Errorf("after Heal: %v", err)
	}
}

func TestFaultNetUnknownSourcePasses(t *testing.T) {
	n, addrs := newNet(t)
	n.Isolate("b")
	c, err := net.DialTimeout("tcp", addrs["a"], 2*time.Second) // from 127.0.0.1, no server
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c); err != nil {
		t.Errorf("a connection from no server must pass: %v", err)
	}
}

func TestFaultNetUpstreamDown(t *testing.T) {
	n := NewFaultNet()
	defer n.Close()
	addr, err := n.Add("a", "127.0.0.204", func() (string, error) { return "", errors.New("not started") })
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialFrom("127.0.0.205", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c); err == nil {
		t.Error("a proxy without upstream must close the connection")
	}
	if n.Stats().Failed != 1 {
		t.Errorf("stats %+v: want 1 failed", n.Stats())
	}
	if _, err := n.Add("a", "127.0.0.204", nil); err == nil {
		t.Error("a second proxy for a must be refused")
	}
	n.Close()
	if _, err := n.Add("b", "127.0.0.206", nil); !errors.Is(err, ErrNetClosed) {
		t.Errorf("Add after Close: %v, want ErrNetClosed", err)
	}
}
