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
	// no VRP: the serial moves to the table's index, as a full load of the
	// state names it (TestQuietChange: without a Serial Notify)
	noASN := put("192.0.2.0/24", 24, 0)
	rev := h.apply(fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: "jti-1"}})
	if fresh := loadFresh(t, h.s); fresh != noASN {
		t.Errorf("a cache loaded after the authorization without an AS at %d names the data %d", noASN, fresh)
	}
	del := h.apply(fsm.MsgRouteAuthDelete, fsm.RouteAuthDelete{Prefix: "10.0.0.0/8"})
	waitSerial(t, c, del)
	c.mu.RLock()
	for _, d := range c.history {
		if d.to == rev {
			t.Errorf("a revocation at %d moved the serial", rev)
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

// loadFresh is the serial a cache that starts following store now names
// its data by.
func loadFresh(t *testing.T, store *fsm.Store) uint64 {
	t.Helper()
	c := NewCache("test.example.net", 0)
	loaded := c.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, store, c) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-loaded:
	case <-time.After(5 * time.Second):
		t.Fatal("the fresh cache did not load")
	}
	_, serial, _ := c.State()
	return serial
}

// TestQuietChange: a change that moves no VRP moves the serial and sends
// routers no Serial Notify; a router at the serial before gets an empty
// delta.
func TestQuietChange(t *testing.T) {
	c := NewCache("test.example.net", 0)
	p := netip.MustParsePrefix("10.0.0.0/8")
	c.Load(10, []VRP{{p, 8, 64500}})
	notified := c.Changed()
	c.Update(12, map[netip.Prefix][]VRP{netip.MustParsePrefix("192.0.2.0/24"): nil})
	select {
	case <-notified:
		t.Error("a change that moved no VRP notified routers")
	default:
	}
	if _, serial, n := c.State(); serial != 12 || n != 1 {
		t.Errorf("serial %d with %d VRPs, want 12 with 1", serial, n)
	}
	b, a := c.appendDelta(nil, 1, SessionID("test.example.net", 12), 10)
	if !a.found || len(b) != 0 {
		t.Errorf("delta from 10: found %v, %d bytes; want an empty delta", a.found, len(b))
	}
	c.Update(13, map[netip.Prefix][]VRP{p: nil})
	select {
	case <-notified:
	default:
		t.Error("a withdrawal did not notify routers")
	}
}
