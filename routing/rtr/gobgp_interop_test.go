package rtr_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/keymesh/keymesh/routing/rtr"
)

// TestGoBGPInterop runs GoBGP's RPKI client (an independent RTR
// implementation, speaking version 0) against a cache server: its ROA
// table is read back after the first load and after a change, which it
// learns of from the Serial Notify.
func TestGoBGPInterop(t *testing.T) {
	c := rtr.NewCache("test.example.net", 0)
	c.Load(10, []rtr.VRP{
		{Prefix: netip.MustParsePrefix("10.20.0.0/16"), MaxLen: 24, ASN: 64500},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), MaxLen: 48, ASN: 64501},
	})
	srv, err := rtr.NewServer(rtr.Config{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	bgp := server.NewBgpServer(server.LoggerOption(quietLogger{}))
	go bgp.Serve()
	ctx := context.Background()
	if err := bgp.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64510, RouterId: "192.0.2.1", ListenPort: -1}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bgp.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	host, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	if err := bgp.AddRpki(ctx, &api.AddRpkiRequest{Address: host, Port: uint32(p), Lifetime: 3600}); err != nil {
		t.Fatal(err)
	}

	want := []string{"10.20.0.0/16-24 AS64500", "2001:db8::/32-48 AS64501"}
	waitTable(t, bgp, want)

	c.Update(12, map[netip.Prefix][]rtr.VRP{
		netip.MustParsePrefix("10.20.0.0/16"):    nil,
		netip.MustParsePrefix("198.51.100.0/24"): {{Prefix: netip.MustParsePrefix("198.51.100.0/24"), MaxLen: 24, ASN: 64502}},
	})
	waitTable(t, bgp, []string{"198.51.100.0/24-24 AS64502", "2001:db8::/32-48 AS64501"})

	var st *api.RPKIState
	bgp.ListRpki(ctx, &api.ListRpkiRequest{}, func(r *api.Rpki) { st = r.State })
	if st == nil || !st.Up || st.SerialNotify == 0 || st.Serial != 12 {
		t.Fatalf("GoBGP's view of the cache: %+v", st)
	}
	var m bytes.Buffer
	srv.WriteMetrics(&m)
	if !strings.Contains(m.String(), `keymesh_rtr_sessions_total{version="0"} 1`) {
		t.Errorf("GoBGP did not speak version 0:\n%s", m.String())
	}
}

// waitTable polls GoBGP's ROA table (it has no event for a change of it)
// until it is want.
func waitTable(t *testing.T, bgp *server.BgpServer, want []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = nil
		for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
			bgp.ListRpkiTable(context.Background(), &api.ListRpkiTableRequest{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}}, func(r *api.Roa) {
				got = append(got, r.Prefix+"/"+strconv.Itoa(int(r.Prefixlen))+"-"+strconv.Itoa(int(r.Maxlen))+" AS"+strconv.Itoa(int(r.Asn)))
			})
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GoBGP's ROA table %v, want %v", got, want)
}

type quietLogger struct{}

func (quietLogger) Panic(string, gobgplog.Fields) {}
func (quietLogger) Fatal(string, gobgplog.Fields) {}
func (quietLogger) Error(string, gobgplog.Fields) {}
func (quietLogger) Warn(string, gobgplog.Fields)  {}
func (quietLogger) Info(string, gobgplog.Fields)  {}
func (quietLogger) Debug(string, gobgplog.Fields) {}
func (quietLogger) SetLevel(gobgplog.LogLevel)    {}
func (quietLogger) GetLevel() gobgplog.LogLevel   { return gobgplog.PanicLevel }
