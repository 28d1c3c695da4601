package attack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/routing/rtr"
	"github.com/keymesh/keymesh/test/harness"
)

type rtrConn struct {
	t *testing.T
	c net.Conn
	r *rtr.Reader
}

func dialRTR(t *testing.T, addr string) *rtrConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rtrConn{t: t, c: c, r: rtr.NewReader(c, 1<<20)}
}

func (r *rtrConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rtrConn) reset() (rtr.PDU, []string) {
	r.t.Helper()
	r.write((&rtr.PDU{Version: 1, Type: rtr.TypeResetQuery}).Append(nil))
	return r.untilEOD()
}

func (r *rtrConn) untilEOD() (rtr.PDU, []string) {
	r.t.Helper()
	var got []string
	for {
		p, err := r.r.Read()
		if err != nil {
			r.t.Fatalf("reading the answer: %v", err)
		}
		switch p.Type {
		case rtr.TypeEndOfData:
			return p, got
		case rtr.TypeIPv4Prefix, rtr.TypeIPv6Prefix:
			got = append(got, p.String())
		case rtr.TypeErrorReport:
			r.t.Fatalf("error report: %s", p.String())
		}
	}
}

// closedAfterError reads an Error Report of code, then the end of the
// connection.
func (r *rtrConn) closedAfterError(code rtr.ErrorCode) {
	r.t.Helper()
	p, err := r.r.Read()
	if err != nil || p.Type != rtr.TypeErrorReport || p.Code != code {
		r.t.Fatalf("got %s (%v), want an error report %s", p.String(), err, code)
	}
	if _, err := r.r.ReadRaw(); !errors.Is(err, io.EOF) && !isConnReset(err) {
		r.t.Fatalf("after the error report: %v, want the connection closed", err)
	}
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestRTRAttacks: the RTR cache of a root process, attacked as a router
// on the network would. RTR has no credential (RFC 8210 section 9: plain
// TCP on a trusted network), so what matters is that it is read-only,
// bounded and keeps serving the honest routers:
//   - a flood of connections past --rtr-max-routers is closed at accept,
//     while the routers already connected still get a change;
//   - a router "announcing" a prefix (a PDU a router never sends) is
//     refused and changes nothing: there is no write path;
//   - oversized, malformed and later-version PDUs are answered with an
//     Error Report and the end of the session;
//   - a Serial Query with a forged session id or an old serial is sent a
//     Cache Reset, never a delta of another session.
func TestRTRAttacks(t *testing.T) {
	c := harness.Start(t, bin, harness.Config{Servers: 1, RTR: true, Extra: []string{"--rtr-max-routers", "4"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r1 := c.Roots[0]
	cl := c.Client(r1)
	if _, err := cl.SetNetworkASN(ctx, 64500); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.80.0.0/16", Origins: []string{"edge-1"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	want := []string{"v1 announce 10.80.0.0/16-24 AS64500"}

	t.Run("connection flood", func(t *testing.T) {
		var honest []*rtrConn
		for range 4 {
			r := dialRTR(t, r1.RTRAddr)
			if _, got := r.reset(); !slices.Equal(got, want) {
				t.Fatalf("served %v, want %v", got, want)
			}
			honest = append(honest, r)
		}
		for i := range 20 {
			r := dialRTR(t, r1.RTRAddr)
			if _, err := r.r.ReadRaw(); !errors.Is(err, io.EOF) && !isConnReset(err) {
				t.Fatalf("connection %d past the limit: %v, want it closed", i, err)
			}
		}
		if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.81.0.0/16", Origins: []string{"edge-1"}}); err != nil {
			t.Fatal(err)
		}
		for _, r := range honest {
			if p, err := r.r.Read(); err != nil || p.Type != rtr.TypeSerialNotify {
				t.Fatalf("an honest router got %s (%v) after the change, want a serial notify", p.String(), err)
			}
			r.c.Close()
		}
		if _, err := cl.UnauthorizeRoute(ctx, "10.81.0.0/16", nil); err != nil {
			t.Fatal(err)
		}
		if n := metricSum(t, ctx, c, "keymesh_rtr_refused_total"); n < 20 {
			t.Errorf("keymesh_rtr_refused_total %d, want at least 20", n)
		}
	})
	// the closed honest sessions leave the server at their own pace
	waitRTRRouters(t, ctx, c, 0)

	t.Run("write attempt", func(t *testing.T) {
		r := dialRTR(t, r1.RTRAddr)
		forged := rtr.PDU{Version: 1, Type: rtr.TypeIPv4Prefix, Announce: true, Prefix: netip.MustParsePrefix("10.80.0.0/16"), MaxLen: 24, ASN: 64666}
		r.write(forged.Append(nil))
		r.closedAfterError(rtr.CodeInvalidRequest)
		if _, got := dialRTR(t, r1.RTRAddr).reset(); !slices.Equal(got, want) {
			t.Fatalf("after the forged announcement the cache serves %v, want %v", got, want)
		}
	})
	for _, bad := range []struct {
		name string
		pdu  []byte
		code rtr.ErrorCode
	}{
		{"oversized", []byte{1, 2, 0, 0, 0x01, 0, 0, 0}, rtr.CodeCorruptData},
		{"wrong length", []byte{1, 2, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0}, rtr.CodeCorruptData},
		{"later version", []byte{2, 2, 0, 0, 0, 0, 0, 8}, rtr.CodeUnsupportedVersion},
		{"unknown type", []byte{1, 99, 0, 0, 0, 0, 0, 8}, rtr.CodeUnsupportedPDUType},
	} {
		t.Run(bad.name, func(t *testing.T) {
			r := dialRTR(t, r1.RTRAddr)
			r.write(bad.pdu)
			r.closedAfterError(bad.code)
		})
	}
	t.Run("forged session", func(t *testing.T) {
		r := dialRTR(t, r1.RTRAddr)
		eod, _ := r.reset()
		for _, q := range []rtr.PDU{
			{Version: 1, Type: rtr.TypeSerialQuery, Session: eod.Session ^ 0x5555, Serial: eod.Serial},
			{Version: 1, Type: rtr.TypeSerialQuery, Session: eod.Session, Serial: eod.Serial - 1000},
		} {
			r.write(q.Append(nil))
			if p, err := r.r.Read(); err != nil || p.Type != rtr.TypeCacheReset {
				t.Fatalf("%s answered %s (%v), want a cache reset", q.String(), p.String(), err)
			}
		}
	})
	if n := metricSum(t, ctx, c, `keymesh_rtr_errors_total{code="corrupt_data"}`); n < 2 {
		t.Errorf("corrupt_data error reports counted %d, want 2", n)
	}
	if strings.Contains(r1.Log(), "panic") {
		t.Fatalf("the root panicked:\n%s", r1.Log())
	}
}

func waitRTRRouters(t *testing.T, ctx context.Context, c *harness.Cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for metricSum(t, ctx, c, "keymesh_rtr_routers") != n {
		if time.Now().After(deadline) {
			t.Fatalf("keymesh_rtr_routers did not reach %d", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a real process
	}
}
