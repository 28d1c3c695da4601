package routing

import (
	"bytes"
	"context"
	"testing"
)

// FuzzUpdate: DecodeUpdate never panics, and what it takes is canonical:
// it encodes back to the same bytes.
func FuzzUpdate(f *testing.F) {
	good, _ := EncodeUpdate(Update{Announce: []Route{*goldenRoute()}, Withdraw: []NLRI{MustNLRI("service:web")}})
	f.Add(good)
	f.Add([]byte{0xa1, 0x02, 0x81, 0x6b})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := DecodeUpdate(b)
		if err != nil {
			return
		}
		again, err := EncodeUpdate(u)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("taken but not canonical: %x -> %x (%v)", b, again, err)
		}
	})
}

// FuzzValidate: whatever a neighbour sends, validation neither panics nor
// accepts a route that is not signed along its path.
func FuzzValidate(f *testing.F) {
	m := newTestMesh(f)
	a, b := m.node("a"), m.node("b")
	honest := a.forward(a.signed("10.1.0.0/24", 1, m.now()), "b", false)
	good, _ := EncodeUpdate(Update{Announce: []Route{*honest}})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := DecodeUpdate(body)
		if err != nil {
			return
		}
		for i := range u.Announce {
			r := &u.Announce[i]
			if err := b.val.Verify(context.Background(), r, "a"); err == nil {
				// What the signatures cover must be the honest route's (an
				// ECDSA signature has a second form that verifies too).
				got, _ := r.SigHash()
				want, _ := honest.SigHash()
				gs, _ := r.SegmentHash(len(r.Path) - 1)
				ws, _ := honest.SegmentHash(len(honest.Path) - 1)
				if got != want || gs != ws || len(r.Path) != len(honest.Path) {
					enc, _ := r.Encode()
					t.Fatalf("a route not signed by a verified: %x", enc)
				}
			}
			b.val.Origin(r)
		}
	})
}
