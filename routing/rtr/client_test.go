package rtr

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

func TestFetch(t *testing.T) {
	c := NewCache("test.example.net", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, addr := startServer(t, Config{Cache: c})
	var re *ReportError
	if _, err := Fetch(ctx, addr, 1, 0); !errors.As(err, &re) || re.Code != CodeNoDataAvailable || !errors.Is(err, ErrReport) {
		t.Fatalf("before any data: %v", err)
	}
	want := []VRP{{pfx("10.0.0.0/8"), 24, 64500}, {pfx("2001:db8::/32"), 48, 64501}}
	c.Load(42, want)
	for _, v := range []uint8{0, 1} {
		d, err := Fetch(ctx, addr, v, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.VRPs, want) || d.Serial != 42 || d.Version != v || d.Session != SessionID("test.example.net", 42) {
			t.Fatalf("version %d: %+v", v, d)
		}
	}
	if _, err := Fetch(ctx, addr, 1, 1); err == nil {
		t.Fatal("an answer past maxVRPs was taken")
	}
	// a cache of version 0 only: asked again in 0
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for i := 0; i < 2; i++ {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			r := NewReader(conn, 0)
			p, _ := r.Read()
			if p.Version > 0 {
				e := PDU{Version: 0, Type: TypeErrorReport, Code: CodeUnsupportedVersion, Text: "0 only"}
				conn.Write(e.Append(nil))
			} else {
				var b []byte
				b = (&PDU{Version: 0, Type: TypeCacheResponse, Session: 9}).Append(b)
				b = (&PDU{Version: 0, Type: TypeEndOfData, Session: 9, Serial: 3}).Append(b)
				conn.Write(b)
			}
			conn.Close()
		}
	}()
	d, err := Fetch(ctx, l.Addr().String(), 1, 0)
	if err != nil || d.Version != 0 || d.Serial != 3 {
		t.Fatalf("downgrade: %+v, %v", d, err)
	}
}
