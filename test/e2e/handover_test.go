package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/test/harness"
)

// writeLoop writes revocations through root via until stop is closed,
// sending the time of each acknowledged write on acked.
func writeLoop(c *harness.Cluster, via *harness.Root, acked chan<- time.Time, stop <-chan struct{}) {
	defer close(acked)
	cl := c.Client(via)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: fmt.Sprintf("handover-%d-%d", time.Now().UnixNano(), i), Reason: "handover test"})
		cancel()
		if err == nil {
			acked <- time.Now()
		} // else tried again: the gap is what counts
	}
}

// TestLeaderHandsOverOnStop: a leader stopped with SIGTERM hands its
// leadership to another voter before it stops, so the writes through a
// follower pause for the moment the successor takes, not for a heartbeat
// timeout and an election (as after kill -9 of the leader, measured in
// the same run). The roots wait out crashes: a leader whose process is
// gone would otherwise be replaced at once too (failover.go), and the
// test could not tell a hand-over from that.
func TestLeaderHandsOverOnStop(t *testing.T) {
	c := harness.StartCluster(t, bin, 3, "--raft-wait-out-crashes")
	measure := func(stopIt func(*harness.Root)) (time.Duration, int) {
		t.Helper()
		leader := c.Leader(10 * time.Second)
		var via *harness.Root
		for _, r := range c.Running() {
			if r != leader {
				via = r
				break
			}
		}
		acked, stop := make(chan time.Time, 1<<16), make(chan struct{})
		go writeLoop(c, via, acked, stop)
		var last time.Time
		var gap time.Duration
		n := 0
		take := func(k int) {
			for range k {
				at, ok := <-acked
				if !ok {
					t.Fatal("the writer stopped")
				}
				if !last.IsZero() {
					gap = max(gap, at.Sub(last))
				}
				last, n = at, n+1
			}
		}
		take(50)
		stopIt(leader)
		c.Leader(10 * time.Second)
		take(50) // writes after the new leader is known
		close(stop)
		for range acked {
		}
		c.Restart(leader)
		c.WaitConverged(30 * time.Second)
		return gap, n
	}
	killGap, killN := measure(c.Kill)
	termGap, termN := measure(c.Terminate)
	t.Logf("longest pause of the writes through a follower: %s when the leader was killed (%d writes), %s when it was stopped with SIGTERM (%d writes)",
		killGap.Round(time.Millisecond), killN, termGap.Round(time.Millisecond), termN)
	// Without a hand-over no election can end before the heartbeat
	// timeout has passed.
	if hb := cluster.DefaultRaftTimeouts().Heartbeat; termGap >= hb {
		t.Errorf("a SIGTERM of the leader paused the writes for %s, not less than the heartbeat timeout: no hand-over", termGap)
	}
}

// TestHandOverStartsOneElection: with the crash election on (the default),
// a SIGTERM of the leader costs one election, not two. The third root sees
// the stopping leader's connections close and its port refuse, as after a
// crash, but by then the successor has asked for its vote or already leads:
// the term has moved or the leader is heard, and it leaves the election to
// the hand-over.
func TestHandOverStartsOneElection(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for round := range 3 {
		leader := c.Leader(10 * time.Second)
		before, err := c.StatusOf(ctx, leader)
		if err != nil {
			t.Fatal(err)
		}
		c.Terminate(leader)
		c.Leader(10 * time.Second)
		c.Restart(leader)
		c.WaitConverged(30 * time.Second)
		// By now any second election would have ended: the crash
		// election goes within a heartbeat timeout of the close.
		for _, r := range c.Running() {
			st, err := c.StatusOf(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if st.Term != before.Term+1 {
				t.Errorf("round %d: %s is in term %d after the SIGTERM of %s in term %d: want exactly one election", round, r.Name, st.Term, leader.Name, before.Term)
			}
		}
	}
}
