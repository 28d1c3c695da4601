package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/routing/rtr"
)

// rtrClient is a minimal router for tests: it asks and reads PDUs.
type rtrClient struct {
	t *testing.T
	c net.Conn
	r *rtr.Reader
}

func dialRTR(t *testing.T, addr string) *rtrClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rtrClient{t: t, c: c, r: rtr.NewReader(c, 1<<20)}
}

func (r *rtrClient) send(p rtr.PDU) {
	r.t.Helper()
	if _, err := r.c.Write(p.Append(nil)); err != nil {
		r.t.Fatal(err)
	}
}

// answer reads up to End of Data and returns it with the prefixes.
func (r *rtrClient) answer() (rtr.PDU, []string) {
	r.t.Helper()
	var got []string
	for {
		p, err := r.r.Read()
		if err != nil {
			r.t.Fatal(err)
		}
		switch p.Type {
		case rtr.TypeEndOfData:
			return p, got
		case rtr.TypeErrorReport:
			if p.Code == rtr.CodeNoDataAvailable {
				r.t.Fatalf("no data yet: %s", p.String())
			}
			r.t.Fatalf("error report: %s", p.String())
		case rtr.TypeIPv4Prefix, rtr.TypeIPv6Prefix:
			got = append(got, p.String())
		}
	}
}

// TestRTRServedByEveryRoot: each of three roots serves the route
// authorizations over RTR from its own replica; all name the same data by
// the same serial (the table's Raft index) and session, an authorization
// without an AS is not served, and a change reaches every router as a
// Serial Notify.
func TestRTRServedByEveryRoot(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(o *Options) { o.RTRAddr = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := tc.leader()
	put := func(prefix string, asn uint32) uint64 {
		idx, err := l.Propose(ctx, fsm.MsgRouteAuthPut, fsm.RouteAuthPut{Auth: fsm.RouteAuth{Prefix: prefix, Origins: []string{"edge-1"}, MaxLength: netip.MustParsePrefix(prefix).Bits(), ASN: asn}})
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	put("10.20.0.0/16", 64500)
	put("2001:db8::/32", 64501)
	last := put("192.0.2.0/24", 0)
	tc.converged(ctx)

	var routers []*rtrClient
	var first rtr.PDU
	for i, s := range tc.servers {
		if s.RTRAddr() == "" {
			t.Fatalf("%s serves no RTR", s.Name())
		}
		r := dialRTR(t, s.RTRAddr())
		r.send(rtr.PDU{Version: 1, Type: rtr.TypeResetQuery})
		eod, got := r.answer()
		want := []string{"v1 announce 10.20.0.0/16-16 AS64500", "v1 announce 2001:db8::/32-32 AS64501"}
		if !slices.Equal(got, want) {
			t.Fatalf("%s serves %v, want %v", s.Name(), got, want)
		}
		if i == 0 {
			first = eod
		} else if eod.Session != first.Session || eod.Serial != first.Serial {
			t.Fatalf("%s answers %s, %s answered %s", s.Name(), eod.String(), tc.servers[0].Name(), first.String())
		}
		routers = append(routers, r)
	}
	// the serial is the table's last change, the authorization without an
	// AS too (it moves no VRP, so it sent no Serial Notify)
	if uint64(first.Serial) != last {
		t.Fatalf("serial %d, want %d", first.Serial, last)
	}
	idx, err := l.Propose(ctx, fsm.MsgRouteAuthDelete, fsm.RouteAuthDelete{Prefix: "10.20.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range routers {
		p, err := r.r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if p.Type != rtr.TypeSerialNotify || uint64(p.Serial) != idx {
			t.Fatalf("%s sent %s after the delete at %d", tc.servers[i].Name(), p.String(), idx)
		}
		r.send(rtr.PDU{Version: 1, Type: rtr.TypeSerialQuery, Session: first.Session, Serial: first.Serial})
		eod, got := r.answer()
		if !slices.Equal(got, []string{"v1 withdraw 10.20.0.0/16-16 AS64500"}) || uint64(eod.Serial) != idx {
			t.Fatalf("%s delta %v to %s", tc.servers[i].Name(), got, eod.String())
		}
	}
	fams := scrape(t, tc.servers[0], adminCert(t, tc.servers[0]))
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{{"keymesh_rtr_routers", nil, 1}, {"keymesh_rtr_queries_total", []string{"kind", "reset"}, 1},
		{"keymesh_rtr_queries_total", []string{"kind", "serial"}, 1}, {"keymesh_rtr_vrps", nil, 1},
		{"keymesh_rtr_serial", nil, float64(idx)}, {"keymesh_rtr_sessions_total", []string{"version", "1"}, 1}} {
		if v, ok := value(fams, m.name, m.labels...); !ok || v != m.want {
			t.Errorf("%s%v = %v (found %v), want %v", m.name, m.labels, v, ok, m.want)
		}
	}
}

func TestRTRAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := testOptions(t)
	o.RTRAddr = l.Addr().String()
	_, _, err = startBootstrap(ctx, BootstrapConfig{Network: "test.keymesh.example", Name: "r1", DataDir: t.TempDir() + "/r1",
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: o})
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("bootstrap with the RTR port taken: %v", err)
	}
}
