package routing

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/route.golden")

// goldenRoute is a route with fixed signatures: its bytes never change.
func goldenRoute() *Route {
	return &Route{NLRI: MustNLRI("10.1.0.0/24"), Origin: "edge-1", Network: testNetwork, NextHop: "192.0.2.1",
		Meta: map[string]string{"site": "ams", "tier": "1"}, SignedAt: 1893456000, Seq: 7, KID: "kid-edge-1",
		Sig: bytes.Repeat([]byte{0xa1}, 8),
		Path: []Segment{{Node: "edge-1", Target: "core-1", KID: "kid-edge-1", Sig: bytes.Repeat([]byte{0xb2}, 8)},
			{Node: "core-1", Target: "edge-2", KID: "kid-core-1", OTC: true, Sig: bytes.Repeat([]byte{0xc3}, 8)}}}
}

// TestGoldenRoute: the canonical encoding of a route and the hashes its
// signatures cover stay byte for byte (go test -rewrite records them).
func TestGoldenRoute(t *testing.T) {
	r := goldenRoute()
	enc, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := r.SigHash()
	if err != nil {
		t.Fatal(err)
	}
	h0, _ := r.SegmentHash(0)
	h1, _ := r.SegmentHash(1)
	upd, err := EncodeUpdate(Update{Announce: []Route{*r}, Withdraw: []NLRI{MustNLRI("service:web.prod"), MustNLRI("2001:db8::/32")}})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("route %x\nsighash %x\nsegment0 %x\nsegment1 %x\nupdate %x\n", enc, sh, h0, h1, upd)
	if *rewrite {
		if err := os.WriteFile("testdata/route.golden", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/route.golden")
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("encoding changed:\n%s\nwant:\n%s", got, want)
	}
	// SigHash leaves out the signatures and the path; every signed field
	// changes it.
	bare := *r
	bare.Sig, bare.Path = nil, nil
	if h, _ := bare.SigHash(); h != sh {
		t.Fatal("SigHash depends on the signatures or the path")
	}
	for name, edit := range map[string]func(*Route){
		"nlri": func(r *Route) { r.NLRI = MustNLRI("10.1.1.0/24") }, "origin": func(r *Route) { r.Origin = "edge-9" },
		"network": func(r *Route) { r.Network = "other.example" }, "next hop": func(r *Route) { r.NextHop = "192.0.2.2" },
		"meta": func(r *Route) { r.Meta = map[string]string{"site": "fra"} }, "time": func(r *Route) { r.SignedAt++ },
		"seq": func(r *Route) { r.Seq++ }, "kid": func(r *Route) { r.KID = "kid-2" },
	} {
		c := *r
		edit(&c)
		if h, _ := c.SigHash(); h == sh {
			t.Errorf("SigHash does not cover the %s", name)
		}
	}
	// A decoded route is the same route.
	u, err := DecodeUpdate(upd)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := u.Announce[0].Encode()
	if !bytes.Equal(again, enc) {
		t.Fatal("a decoded route encodes differently")
	}
}

func TestParseNLRI(t *testing.T) {
	for _, s := range []string{"10.1.0.0/24", "0.0.0.0/0", "2001:db8::/32", "service:web.prod", "service:a-b_c.d"} {
		n, err := ParseNLRI(s)
		if err != nil || n.String() != s {
			t.Errorf("%q: %v, %q", s, err, n)
		}
	}
	for _, s := range []string{"", "10.1.0.1/24", "10.1.0.0", "::ffff:10.1.0.0/120", "service:", "service:Web", "service:-x",
		"service:" + strings.Repeat("a", MaxServiceLen+1), "web", "10.1.0.0/33", "fe80::%eth0/64"} {
		if _, err := ParseNLRI(s); !errors.Is(err, ErrNLRI) {
			t.Errorf("%q: %v, want ErrNLRI", s, err)
		}
	}
}

// TestBadUpdates: bad UPDATE bodies are refused with ErrMalformed (or
// ErrPath, ErrNLRI) and never panic.
func TestBadUpdates(t *testing.T) {
	good, _ := EncodeUpdate(Update{Announce: []Route{*goldenRoute()}})
	enc := func(v any) []byte { b, _ := encMode.Marshal(v); return b }
	many := Update{}
	for range MaxUpdateRoutes + 1 {
		many.Withdraw = append(many.Withdraw, MustNLRI("10.0.0.0/8"))
	}
	loop := goldenRoute()
	loop.Path[1].Target = "edge-1"
	gap := goldenRoute()
	gap.Path = gap.Path[1:]
	long := goldenRoute()
	for range MaxPath {
		long.Path = append(long.Path, long.Path[1])
	}
	for _, c := range []struct {
		name string
		body []byte
		want error
	}{
		{"empty body", nil, ErrMalformed},
		{"empty update", enc(map[int]any{}), ErrMalformed},
		{"not a map", enc([]int{1}), ErrMalformed},
		{"unknown key", enc(map[int]any{1: []any{}, 9: 1}), ErrMalformed},
		{"truncated", good[:len(good)-3], ErrMalformed},
		{"trailing bytes", append(append([]byte{}, good...), 0), ErrMalformed},
		{"indefinite length", append([]byte{0xbf}, good[1:]...), ErrMalformed},
		{"too many", enc(many), ErrMalformed},
		{"bad nlri", enc(map[int]any{2: []string{"10.0.0.1/8"}}), ErrMalformed},
		// Decoded, refused route by route.
		{"a loop", enc(Update{Announce: []Route{*loop}}), ErrPath},
		{"a gap in the path", enc(Update{Announce: []Route{*gap}}), ErrPath},
		{"a long path", enc(Update{Announce: []Route{*long}}), ErrPath},
		{"no signature", enc(Update{Announce: []Route{func() Route { r := *goldenRoute(); r.Sig = nil; return r }()}}), ErrMalformed},
		{"too much metadata", enc(Update{Announce: []Route{func() Route {
			r := *goldenRoute()
			r.Meta = map[string]string{}
			for i := range MaxMeta + 1 {
				r.Meta[fmt.Sprintf("k%d", i)] = "v"
			}
			return r
		}()}}), ErrMalformed},
		{"an empty metadata key", enc(Update{Announce: []Route{func() Route { r := *goldenRoute(); r.Meta = map[string]string{"": "x"}; return r }()}}), ErrMalformed},
		{"a next hop that is no address", enc(Update{Announce: []Route{func() Route { r := *goldenRoute(); r.NextHop = "router-7"; return r }()}}), ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, err := DecodeUpdate(c.body)
			if err == nil && len(u.Announce) == 1 {
				err = u.Announce[0].Check()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
	if _, err := DecodeUpdate(good); err != nil {
		t.Fatal(err)
	}
}

// TestPathAttacks: a route from a through b to c verifies at c; every
// change to it an attacker on the way could make fails.
func TestPathAttacks(t *testing.T) {
	m := newTestMesh(t)
	a, b, c, x := m.node("a"), m.node("b"), m.node("c"), m.node("x")
	now := m.now()
	base := a.signed("10.1.0.0/24", 1, now)
	viaB := b.forward(a.forward(base, "b", false), "c", false)
	if err := c.val.Verify(context.Background(), viaB, "b"); err != nil {
		t.Fatalf("an honest route: %v", err)
	}
	if got := viaB.Nodes(); strings.Join(got, ">") != "a>b" {
		t.Fatalf("path %v", got)
	}
	clone := func(r *Route) *Route {
		body, _ := r.Encode()
		var out Route
		if err := decMode.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		return &out
	}
	cases := []struct {
		name  string
		route func() *Route
		from  string
		at    *testNode
		want  error
	}{
		{"path shortened: b drops a's segment", func() *Route { r := clone(viaB); r.Path = r.Path[1:]; return r }, "b", c, ErrPath},
		{"path shortened: b poses as the origin", func() *Route {
			r := clone(base)
			r.Origin = "b"
			return b.forward(r, "c", false)
		}, "b", c, ErrKey},
		{"hop inserted", func() *Route {
			r := x.forward(a.forward(base, "x", false), "b", false)
			r.Path = append(r.Path[:1], r.Path...) // x's segment twice
			return b.forward(r, "c", false)
		}, "b", c, ErrPath},
		{"hop inserted under another's kid", func() *Route {
			r := clone(viaB)
			seg := r.Path[1]
			seg.Node, seg.Target, seg.KID = "x", "b", x.key.Load().KID
			r.Path = []Segment{r.Path[0], seg, r.Path[1]}
			r.Path[0].Target = "x"
			return r
		}, "b", c, ErrSignature},
		{"replayed to another neighbour", func() *Route { return clone(viaB) }, "b", x, ErrPath},
		{"sent on by another than the signer", func() *Route { return clone(viaB) }, "x", c, ErrPath},
		// Node ids repeat across networks: a federated network's node of
		// b's id resends what b signed for c.
		{"replayed by a federated node of the signer's id", func() *Route { return clone(viaB) }, "spiffe://partner.example.net/node/b", c, ErrPath},
		{"signed for this node as a federated one, sent by a federated node of the signer's id", func() *Route {
			return b.forward(a.forward(base, "b", false), identity.SPIFFEID{Network: testNetwork, Kind: identity.KindNode, Name: "c"}.String(), false)
		}, "spiffe://partner.example.net/node/b", c, ErrKey},
		{"origin signature forged", func() *Route { r := clone(viaB); r.Sig[len(r.Sig)-1] ^= 1; return r }, "b", c, ErrSignature},
		{"segment signature forged", func() *Route { r := clone(viaB); r.Path[1].Sig[5] ^= 1; return r }, "b", c, ErrSignature},
		{"origin signature stripped", func() *Route { r := clone(viaB); r.Sig = nil; return r }, "b", c, ErrMalformed},
		{"attribute tampered", func() *Route { r := clone(viaB); r.NextHop = "192.0.2.66"; return r }, "b", c, ErrSignature},
		{"prefix tampered", func() *Route { r := clone(viaB); r.NLRI = MustNLRI("10.1.0.0/25"); return r }, "b", c, ErrSignature},
		{"OTC mark stripped", func() *Route {
			r := b.forward(a.forward(base, "b", false), "c", true)
			r.Path[1].OTC = false
			return r
		}, "b", c, ErrSignature},
		{"unknown key", func() *Route { r := clone(viaB); r.KID = "kid-nobody"; return r }, "b", c, ErrKey},
		{"stale", func() *Route {
			return b.forward(a.forward(a.signed("10.1.0.0/24", 1, now.Add(-25*time.Hour)), "b", false), "c", false)
		}, "b", c, ErrStale},
		{"from the future", func() *Route {
			return b.forward(a.forward(a.signed("10.1.0.0/24", 1, now.Add(time.Hour)), "b", false), "c", false)
		}, "b", c, ErrStale},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			err := cs.at.val.Verify(context.Background(), cs.route(), cs.from)
			if !errors.Is(err, cs.want) {
				t.Fatalf("%v, want %v", err, cs.want)
			}
		})
	}
	// Revoked: the origin's node, then a hop's key.
	m.apply(trust.Records{Revocations: []fsm.Revocation{{Kind: fsm.RevocationKey, ID: b.key.Load().KID, Time: now}}})
	if err := c.val.Verify(context.Background(), viaB, "b"); !errors.Is(err, ErrKey) {
		t.Fatalf("a hop's key revoked: %v", err)
	}
}

// TestReplayDiagram is the seed document's replay diagram: with a window
// of 100 s, a captured UPDATE signed 200 s ago is stale.
func TestReplayDiagram(t *testing.T) {
	m := newTestMesh(t)
	m.windows = 100 * time.Second
	attacker, victim := m.node("attacker"), m.node("victim")
	now := m.now()
	r := attacker.forward(attacker.signed("10.1.0.0/24", 1, now.Add(-200*time.Second)), "victim", false)
	if err := victim.val.Verify(context.Background(), r, "attacker"); !errors.Is(err, ErrStale) {
		t.Fatalf("age 200 s in a 100 s window: %v", err)
	}
	r = attacker.forward(attacker.signed("10.1.0.0/24", 2, now.Add(-50*time.Second)), "victim", false)
	if err := victim.val.Verify(context.Background(), r, "attacker"); err != nil {
		t.Fatalf("age 50 s: %v", err)
	}
}

// TestOriginValidation: RFC 6811's states against the authorizations.
func TestOriginValidation(t *testing.T) {
	m := newTestMesh(t)
	v := m.node("v")
	m.authorize("10.0.0.0/16", 24, "a", "b")
	m.authorize("10.0.0.0/8", 8, "c")
	m.authorize("2001:db8::/32", 48, "a")
	for _, c := range []struct {
		nlri, origin string
		want         OriginState
	}{
		{"10.0.1.0/24", "a", Valid},
		{"10.0.1.0/24", "b", Valid},
		{"10.0.1.0/25", "a", Invalid}, // beyond the max length
		{"10.0.1.0/24", "c", Invalid}, // c may announce 10.0.0.0/8 itself only
		{"10.0.0.0/8", "c", Valid},
		{"10.9.0.0/16", "a", Invalid}, // covered by 10.0.0.0/8, not a's
		{"192.0.2.0/24", "a", NotFound},
		{"2001:db8:1::/48", "a", Valid},
		{"2001:db8:1::/49", "a", Invalid},
		{"service:web", "a", NotFound},
	} {
		r := &Route{NLRI: MustNLRI(c.nlri), Origin: c.origin, Network: testNetwork}
		if got := v.val.Origin(r); got != c.want {
			t.Errorf("%s from %s: %s, want %s", c.nlri, c.origin, got, c.want)
		}
	}
	// A node of another network with the same name: this network's
	// authorizations do not name it, so a prefix they cover is Invalid
	// from it (a federated network cannot take this network's prefixes),
	// one they do not cover NotFound.
	if got := v.val.Origin(&Route{NLRI: MustNLRI("10.0.1.0/24"), Origin: "a", Network: "partner.example.net"}); got != Invalid {
		t.Errorf("a route of another network for a covered prefix: %s, want invalid", got)
	}
	if got := v.val.Origin(&Route{NLRI: MustNLRI("192.0.2.0/24"), Origin: "a", Network: "partner.example.net"}); got != NotFound {
		t.Errorf("a route of another network for an uncovered prefix: %s, want not-found", got)
	}
}
