package routing

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/test/benchlimit"
)

// fiveHops is a route of origin n0 through n1..n4 to n5, as n5 gets it.
func fiveHops(b *testing.B, kt ca.KeyType) (*testNode, *Route) {
	m := newTestMesh(b)
	m.keyType = kt
	var ns []*testNode
	for i := range 6 {
		ns = append(ns, m.node(fmt.Sprintf("n%d", i)))
	}
	r := ns[0].signed("10.1.0.0/24", 1, m.now())
	for i := range 5 {
		r = ns[i].forward(r, ns[i+1].id, false)
	}
	return ns[5], r
}

// BenchmarkValidateFiveHops: validating a route with a 5-hop path (the
// shape and path checks, the hashes, six keys through the trust view,
// six signatures) against its limit, the six raw ecdsa.VerifyASN1 calls
// over the same hashes. Aim: ratio >= 0.9. P-256 is the curve to sign
// routes with (RFC 8208's, and it verifies several times faster than
// P-384 here); route signatures use the node key, whose type `keymesh node
// join --key-type` sets.
func BenchmarkValidateFiveHops(b *testing.B) {
	for _, kt := range []ca.KeyType{ca.KeyP256, ca.KeyP384} {
		b.Run(string(kt), func(b *testing.B) {
			at, r := fiveHops(b, kt)
			ctx := context.Background()
			if err := at.val.Verify(ctx, r, "n4"); err != nil {
				b.Fatal(err)
			}
			type sig struct {
				pub  *ecdsa.PublicKey
				hash [32]byte
				sig  []byte
			}
			var raw []sig
			h, _ := r.SigHash()
			k, _ := at.verifier.SignerKey(ctx, r.KID, r.Signed())
			raw = append(raw, sig{k.Public.(*ecdsa.PublicKey), h, r.Sig})
			for i, s := range r.Path {
				h, _ := r.SegmentHash(i)
				k, _ := at.verifier.SignerKey(ctx, s.KID, r.Signed())
				raw = append(raw, sig{k.Public.(*ecdsa.PublicKey), h, s.Sig})
			}
			benchlimit.Versus(b, "raw-verify", 1, func() {
				if err := at.val.Verify(ctx, r, "n4"); err != nil {
					b.Fatal(err)
				}
			}, func() {
				for _, s := range raw {
					if !ecdsa.VerifyASN1(s.pub, s.hash[:], s.sig) {
						b.Fatal("raw verify failed")
					}
				}
			})
		})
	}
}

// BenchmarkLocRIB: ROUTING_BENCH_N (default 100,000) routes from one
// neighbour, each with a 1-hop path, in the Adj-RIB-In and the Loc-RIB:
// the heap per route (aim <= 1 KiB), and the cost of taking a route in
// (decode, validation, best path) against its limit, the two raw
// signature verifications it holds.
func BenchmarkLocRIB(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("ROUTING_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	m := newTestMesh(b)
	src, v := m.node("src"), m.node("v")
	var updates [][]byte
	var u Update
	for i := range n {
		r := src.forward(src.signed(fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff), 1, m.now()), "v", false)
		u.Announce = append(u.Announce, *r)
		if len(u.Announce) == 100 {
			body, _ := EncodeUpdate(u)
			updates = append(updates, body)
			u = Update{}
		}
	}
	if len(u.Announce) > 0 {
		body, _ := EncodeUpdate(u)
		updates = append(updates, body)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		r := v.start()
		m.link(v, src, RoleCustomer, func(p *PeerPolicy) { p.MaxPrefix = n + 1 })
		b.StartTimer()
		start := time.Now()
		for _, body := range updates {
			r.Update("src", body)
		}
		v.waitFor("every route taken", func() bool {
			ks, _ := r.Keys(context.Background())
			return ks.Best == n
		})
		took := time.Since(start)
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perRoute := float64(after.HeapInuse-before.HeapInuse) / float64(n)
		// The limit: the two signature verifications of every route.
		one := u0(updates)
		t := time.Now()
		for range 200 {
			if err := v.val.Verify(context.Background(), &one, "src"); err != nil {
				b.Fatal(err)
			}
		}
		verifyNs := float64(time.Since(t).Nanoseconds()) / 200
		b.ReportMetric(perRoute, "B/route")
		b.ReportMetric(float64(took.Nanoseconds())/float64(n), "ns/route-in")
		b.ReportMetric(verifyNs/(float64(took.Nanoseconds())/float64(n)), "ratio-vs-verify")
		m.cut("v", "src")
		b.StartTimer()
	}
}

func u0(updates [][]byte) Route {
	u, _ := DecodeUpdate(updates[0])
	return u.Announce[0]
}

// BenchmarkFiveHops: an announcement crossing a line of six routers (five
// hops: at each, validation, best path, a new segment signed). Reports
// p50/p99 over b.N announcements, against the limit of five hops' raw
// work: one signature and the verifications of the path so far per hop.
func BenchmarkFiveHops(b *testing.B) {
	m := newTestMesh(b)
	ns := line(m, "h0", "h1", "h2", "h3", "h4", "h5")
	last := ns[5]
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		nlri := fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)
		start := time.Now()
		announce(b, ns[0], nlri)
		last.waitFor("the announcement", func() bool { return last.best(nlri) != nil })
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	// The limit: per hop, one signature and the verifications of a path
	// as long as the one that hop checks.
	r := ns[0].signed("192.0.2.0/24", 1, m.now())
	t := time.Now()
	for i := range 5 {
		r = ns[i].forward(r, ns[i+1].id, false)
		if err := ns[i+1].val.Verify(context.Background(), r, ns[i].id); err != nil {
			b.Fatal(err)
		}
	}
	limit := time.Since(t)
	b.ReportMetric(float64(p(0.5).Microseconds()), "p50-us")
	b.ReportMetric(float64(p(0.99).Microseconds()), "p99-us")
	b.ReportMetric(float64(limit.Microseconds()), "limit-us")
	b.ReportMetric(float64(limit)/float64(p(0.5)), "ratio-p50")
}
