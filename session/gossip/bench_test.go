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
//
// A size may carry a time dilation, "1000x4": every memberlist timer is
// multiplied by 4 and the times reported are divided by 4. One process
// on two cores cannot run 1,000 members in real time: the joins' alive
// messages (each member re-broadcasts every member it learns of) take
// both cores, probes time out, members are falsely suspected and the
// refutations feed the storm (at x1, 482 members had started after 25
// minutes, with 2,368 suspicion timers live). Dilated, the same protocol
// runs in rounds of the same count with the CPU to spare; what it cannot
// show is a real network's delays, which the in-memory network has none
// of anyway.
func BenchmarkBulletinSpread(b *testing.B) {
	type size struct{ n, dilate int }
	sizes := []size{{50, 1}, {200, 1}}
	if v := os.Getenv("GOSSIP_BENCH_N"); v != "" {
		sizes = nil
		for _, s := range strings.Split(v, ",") {
			ns, ks, dilated := strings.Cut(s, "x")
			n, err := strconv.Atoi(ns)
			k := 1
			if dilated {
				if k, err = strconv.Atoi(ks); err != nil || k < 1 {
					b.Fatalf("GOSSIP_BENCH_N: %q: the dilation after x is a whole number", s)
				}
			}
			if err == nil && n > 1 {
				sizes = append(sizes, size{n, k})
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
	for _, sz := range sizes {
		for _, st := range settings {
			name := fmt.Sprintf("members=%d/%s", sz.n, st.name)
			if sz.dilate > 1 {
				name += fmt.Sprintf("/time=x%d", sz.dilate)
			}
			b.Run(name, func(b *testing.B) { spread(b, sz.n, sz.dilate, st.tune) })
		}
	}
}

// dilate multiplies memberlist's timers by k.
func dilate(c *memberlist.Config, k int) {
	d := time.Duration(k)
	c.ProbeInterval *= d
	c.ProbeTimeout *= d
	c.GossipInterval *= d
	c.GossipToTheDeadTime *= d
	c.PushPullInterval *= d
	c.TCPTimeout *= d
}

func spread(b *testing.B, n, k int, tune func(*memberlist.Config)) {
	m := newTestMesh(b)
	var got atomic.Int64
	arrivals := make(chan time.Time, n*4)
	nodes := make([]*testNode, n)
	var interval time.Duration
	var fanout int
	for i := range n {
		nodes[i] = m.node(fmt.Sprintf("m%d", i))
		// One trust verifier and one cache of checked proofs for the
		// process: each key's certificate chain and each member's proof is
		// checked once here, not once per simulated member. A real node
		// pays that once per peer on its own CPU (about 80 ms for 1,000
		// proofs); n² checks on two cores (80 s of CPU at 1,000) would
		// starve memberlist's timers instead. Every member still asks the
		// cache on every alive message, as a real one does.
		nodes[i].verifier = nodes[0].verifier
	}
	checks := &proofChecks{checked: map[[32]byte]checkedProof{}, times: map[string]int64{}}
	ramp := time.Now()
	for i, nd := range nodes {
		var join []*testNode
		if i > 0 {
			join = []*testNode{nodes[(i-1)/2]} // a tree of joins: no member takes all push-pulls
		}
		nd.start(func(c *Config) {
			c.OnBulletin = func(Bulletin) { got.Add(1); arrivals <- time.Now() }
			c.checks = checks
			c.Tune = func(mc *memberlist.Config) {
				tune(mc)
				interval, fanout = mc.GossipInterval, mc.GossipNodes // the undilated settings
				dilate(mc, k)
			}
		}, join...)
		if n >= 500 && (i+1)%100 == 0 {
			fmt.Fprintf(os.Stderr, "%s: %d members started in %s\n", b.Name(), i+1, time.Since(ramp).Round(time.Second)) // a long run's progress
		}
	}
	// Every member sees every other.
	joined := time.Now()
	b.Logf("%d members started in %s", n, joined.Sub(ramp).Round(time.Millisecond))
	deadline := time.Now().Add(time.Duration(k) * (5*time.Minute + time.Duration(n)*time.Second))
	for i, nd := range nodes {
		if n >= 500 && i%100 == 0 {
			fmt.Fprintf(os.Stderr, "%s: %d members see all %d, %s after the last joined\n", b.Name(), i, n, time.Since(joined).Round(time.Second)) // a long run's progress
		}
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
	// memberlist sends its own broadcasts (the joins' alive messages,
	// each retransmitted 4·log10(n+1) times) before a delegate's: a
	// bulletin published before they drain measures the queue, not the
	// epidemic. Wait until the network carries only probes (a ping and
	// its ack per member per probe interval) for a probe interval.
	lan := memberlist.DefaultLANConfig()
	tune(lan)
	dilate(lan, k)
	probe := lan.ProbeInterval
	quiet := time.Now()
	for p0, _, _ := m.net.Sent(); ; {
		time.Sleep(probe) // the rate over a probe interval; nothing to wait on
		p1, _, _ := m.net.Sent()
		if rate := float64(p1-p0) / float64(n); rate <= 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("gossip still sends %d packets a probe interval among %d members", p1-p0, n)
		}
		if n >= 500 {
			fmt.Fprintf(os.Stderr, "%s: %.1f packets per member a probe interval, %s after convergence\n", b.Name(), float64(p1-p0)/float64(n), time.Since(quiet).Round(time.Second)) // a long run's progress
		}
		p0 = p1
	}
	b.Logf("broadcast queues drained %s after convergence", time.Since(quiet).Round(time.Millisecond))
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
		miss := time.Duration(k) * 10 * time.Second
		timeout := time.After(miss)
	wait:
		for len(times) < n-1 {
			select {
			case at := <-arrivals:
				times = append(times, at.Sub(start)/time.Duration(k))
			case <-timeout:
				break wait // the rest comes by trust sync; counted as missed
			}
		}
		missed += n - 1 - len(times)
		for len(times) < n-1 {
			times = append(times, miss/time.Duration(k)) // a miss counts as the deadline
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
	if k > 1 {
		b.ReportMetric(float64(k), "time-dilation")
	}
	b.ReportMetric(avg(p99s), "ms-to-99%")
	b.ReportMetric(avg(p100s), "ms-to-100%")
	b.ReportMetric(float64(missed)/float64(b.N), "missed/bulletin")
	b.ReportMetric(float64(pkts)/float64(b.N*n), "packets/member")
	b.ReportMetric(float64(byts)/float64(b.N*n), "bytes/member")
	b.ReportMetric(float64(epidemicRounds(n, fanout, 0.99))*float64(interval.Milliseconds()), "model-ms-to-99%")
	b.ReportMetric(float64(epidemicRounds(n, fanout, 1-0.5/float64(n)))*float64(interval.Milliseconds()), "model-ms-to-100%")
}
