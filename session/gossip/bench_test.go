package gossip

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// epidemicRounds is the push-gossip model memberlist's convergence
// simulator uses: each round every member that has the message sends it
// to fanout random others; it returns the rounds until frac of n members
// have it (lossless network).
func epidemicRounds(n, fanout int, frac float64) int {
	have := 1.0
	for r := 1; r < 100; r++ {
		missOne := math.Pow(1-1/float64(n-1), float64(fanout)*have)
		have += (float64(n) - have) * (1 - missOne)
		if have >= frac*float64(n) {
			return r
		}
	}
	return 100
}

// BenchmarkBulletinSpread: GOSSIP_BENCH_N members (default 50,200; make
// scale adds 1000) on the in-memory network, at memberlist's LAN defaults
// and at the settings we recommend for bulletins (gossip every 100 ms to 4
// members). One iteration publishes one bulletin at a member and waits
// until every member applied it. It reports the time to 99 % and 100 % of
// the members, the packets and bytes sent per member meanwhile, and the
// push model's figure at the same size and settings (rounds times the
// gossip interval) beside them.
func BenchmarkBulletinSpread(b *testing.B) {
	sizes := []int{50, 200}
	if v := os.Getenv("GOSSIP_BENCH_N"); v != "" {
		sizes = nil
		for _, s := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(s); err == nil && n > 1 {
				sizes = append(sizes, n)
			}
		}
	}
	settings := []struct {
		name string
		tune func(*memberlist.Config)
	}{
		{"lan-default", func(*memberlist.Config) {}},
		{"recommended", func(c *memberlist.Config) { c.GossipInterval, c.GossipNodes = 100*time.Millisecond, 4 }},
	}
	for _, n := range sizes {
		for _, st := range settings {
			b.Run(fmt.Sprintf("members=%d/%s", n, st.name), func(b *testing.B) { spread(b, n, st.tune) })
		}
	}
}

func spread(b *testing.B, n int, tune func(*memberlist.Config)) {
	m := newTestMesh(b)
	var got atomic.Int64
	arrivals := make(chan time.Time, n*4)
	nodes := make([]*testNode, n)
	var interval time.Duration
	var fanout int
	for i := range n {
		nodes[i] = m.node(fmt.Sprintf("m%d", i))
	}
	ramp := time.Now()
	for i, nd := range nodes {
		var join []*testNode
		if i > 0 {
			join = []*testNode{nodes[(i-1)/2]} // a tree of joins: no member takes all push-pulls
		}
		nd.start(func(c *Config) {
			c.OnBulletin = func(Bulletin) { got.Add(1); arrivals <- time.Now() }
			c.Tune = func(mc *memberlist.Config) {
				tune(mc)
				interval, fanout = mc.GossipInterval, mc.GossipNodes
			}
		}, join...)
	}
	// Every member sees every other.
	joined := time.Now()
	b.Logf("%d members started in %s", n, joined.Sub(ramp).Round(time.Millisecond))
	deadline := time.Now().Add(5*time.Minute + time.Duration(n)*time.Second)
	for _, nd := range nodes {
		for nd.g.mlp.Load().NumMembers() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%s sees %d of %d members", nd.id, nd.g.mlp.Load().NumMembers(), n)
			}
			time.Sleep(10 * time.Millisecond) // memberlist converges on its own timers
		}
	}
	refused := uint64(0)
	for _, nd := range nodes {
		refused += nd.g.Counts()["member_refused"]
	}
	b.Logf("%d members converged %s after the last joined (%d alive messages refused)", n, time.Since(joined).Round(time.Millisecond), refused)
	var p99s, p100s []time.Duration
	var pkts, byts uint64
	missed := 0
	stopAll(b, nodes)
	b.ResetTimer()
	for i := range b.N {
		got.Store(0)
		bl := m.bulletin(uint64(100+i), uint64(100+i), Revocation{Kind: "token", ID: fmt.Sprintf("j%d", i), Time: time.Now().Unix()})
		p0, b0, _ := m.net.Sent()
		start := time.Now()
		if err := nodes[0].g.Publish(bl); err != nil {
			b.Fatal(err)
		}
		var times []time.Duration
		timeout := time.After(10 * time.Second)
	wait:
		for len(times) < n-1 {
			select {
			case at := <-arrivals:
				times = append(times, at.Sub(start))
			case <-timeout:
				break wait // the rest comes by trust sync; counted as missed
			}
		}
		missed += n - 1 - len(times)
		for len(times) < n-1 {
			times = append(times, 10*time.Second) // a miss counts as the deadline
		}
		p1, b1, _ := m.net.Sent()
		pkts, byts = pkts+p1-p0, byts+b1-b0
		slices.Sort(times)
		p99s = append(p99s, times[int(math.Ceil(0.99*float64(len(times))))-1])
		p100s = append(p100s, times[len(times)-1])
	}
	b.StopTimer()
	avg := func(ds []time.Duration) float64 {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return float64(s.Milliseconds()) / float64(len(ds))
	}
	b.ReportMetric(avg(p99s), "ms-to-99%")
	b.ReportMetric(avg(p100s), "ms-to-100%")
	b.ReportMetric(float64(missed)/float64(b.N), "missed/bulletin")
	b.ReportMetric(float64(pkts)/float64(b.N*n), "packets/member")
	b.ReportMetric(float64(byts)/float64(b.N*n), "bytes/member")
	b.ReportMetric(float64(epidemicRounds(n, fanout, 0.99))*float64(interval.Milliseconds()), "model-ms-to-99%")
	b.ReportMetric(float64(epidemicRounds(n, fanout, 1-0.5/float64(n)))*float64(interval.Milliseconds()), "model-ms-to-100%")
}
