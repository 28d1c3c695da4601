package rtr

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
)

type storeHarness struct {
	t   *testing.T
	s   *fsm.Store
	idx uint64
}

func (h *storeHarness) apply(typ fsm.MsgType, p any) uint64 {
	h.t.Helper()
	b, err := fsm.Encode(typ, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), p)
	if err != nil {
		h.t.Fatal(err)
	}
	h.idx++
	if res := h.s.Apply(h.idx, b); res.Err != nil {
		h.t.Fatalf("%v: %v", typ, res.Err)
	}
	return h.idx
}

// waitSerial waits on the cache's change channel until it is at serial.
func waitSerial(t *testing.T, c *Cache, serial uint64) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		ch := c.Changed()
		if _, s, _ := c.State(); s == serial {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			_, s, _ := c.State()
			t.Fatalf("cache at serial %d, want %d", s, serial)
		}
	}
}

// TestFollow keeps a cache at a store: each route authorization change
// moves the serial to its index, an unrelated write does not, an
// authorization without an AS is not served, and a delete withdraws.
func TestFollow(t *testing.T) {
	h := &storeHarness{t: t, s: fsm.New()}
	put := func(prefix string, maxLen int, asn uint32) uint64 {
		return h.apply(fsm.MsgRouteAuthPut, fsm.RouteAuthPut{Auth: fsm.RouteAuth{Prefix: prefix, Origins: []string{"edge-1"}, MaxLength: maxLen, ASN: asn}})
	}
	first := put("10.0.0.0/8", 24, 64500)
	c := NewCache("test.example.net", 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, h.s, c) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitSerial(t, c, first)

	second := put("2001:db8::/32", 48, 64501)
	waitSerial(t, c, second)
	noASN := put("192.0.2.0/24", 24, 0) // no VRP: the serial stays
	rev := h.apply(fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: "jti-1"}})
	del := h.apply(fsm.MsgRouteAuthDelete, fsm.RouteAuthDelete{Prefix: "10.0.0.0/8"})
	waitSerial(t, c, del)
	c.mu.RLock()
	for _, d := range c.history {
		if d.to == rev || d.to == noASN {
			t.Errorf("the write at %d moved the serial (a revocation at %d, an authorization without an AS at %d)", d.to, rev, noASN)
		}
	}
	c.mu.RUnlock()
	want := []VRP{{netip.MustParsePrefix("2001:db8::/32"), 48, 64501}}
	if got := c.VRPs(); !slices.Equal(got, want) {
		t.Fatalf("VRPs %v, want %v", got, want)
	}
	// a router at the second serial gets the withdrawal alone
	b, a := c.appendDelta(nil, 1, SessionID("test.example.net", del), uint32(second))
	if !a.found {
		t.Fatal("delta from the second serial not served")
	}
	p, err := Decode(b)
	if err != nil || p.Announce || p.Prefix != netip.MustParsePrefix("10.0.0.0/8") || len(b) != p.Length() {
		t.Fatalf("delta %x: %v %v", b, p.String(), err)
	}
}
