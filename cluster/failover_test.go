package cluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestClassifyProbe(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name string
		err  error
		want probeResult
	}{
		{"refused", refused, probeGone},
		{"reset during the handshake", reset, probeGone},
		{"closed before the handshake", io.EOF, probeGone},
		{"closed inside a record", fmt.Errorf("remote error: %w", io.ErrUnexpectedEOF), probeGone},
		{"timed out", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, probeUnknown},
		{"context deadline", context.DeadlineExceeded, probeUnknown},
		{"not a root certificate", fmt.Errorf("%w: it presented spiffe://x/node/n1", ErrPeerNotRoot), probeUnknown},
		{"unknown authority", x509.UnknownAuthorityError{}, probeUnknown},
		{"no route", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, probeUnknown},
	} {
		if got := classifyProbe(tc.err); got != tc.want {
			t.Errorf("%s: classifyProbe(%v) = %s, want %s", tc.name, tc.err, got, tc.want)
		}
	}
}

// slowTimeoutsCluster starts three bare Raft servers and, once one leads,
// gives the followers heartbeat and election timeouts of slow, so that an
// election before slow has passed is one the crash watch started. probes
// receives every probe result of every server.
func slowTimeoutsCluster(t *testing.T, slow time.Duration) (nodes []*raftNode, leader int, probes chan probeResult) {
	t.Helper()
	o := testOptions(t)
	// A leader lease and heartbeat well above a loaded machine's stalls, so
	// that the leader does not step down by itself while the test runs;
	// the followers' timeouts go to slow below.
	o.Raft.Heartbeat, o.Raft.Election, o.Raft.LeaderLease = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	o = o.withDefaults()
	nodes, leader = bareNodes(t, o)
	if err := nodes[leader].raft.Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if i != leader {
			awaitLeader(t, n, raft.ServerID(fmt.Sprintf("b%d", leader)))
			awaitCaughtUp(t, n, nodes[leader])
		}
	}
	probes = make(chan probeResult, 64)
	for i, n := range nodes {
		n.watchCrashes(fmt.Sprintf("b%d", i), o.Raft, o.Logger, func(r probeResult) {
			select {
			case probes <- r:
			default:
				t.Errorf("more than %d probe results", cap(probes))
			}
		})
		if i == leader {
			continue
		}
		rc := n.raft.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = slow, slow
		if err := n.raft.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, leader, probes
}

// crash ends n as a killed process would: Raft stops without handing over
// and every connection and the listener close at once.
func crash(t *testing.T, n *raftNode) {
	t.Helper()
	if n.watch != nil {
		n.watch.close()
		n.watch = nil
	}
	// The kernel closes a dead process's sockets together, before anything
	// of it could answer again: the listener and every connection first,
	// then Raft stops (a dead process would not do even that).
	n.stream.ln.Close()
	closeConns(t, n)
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	n.transport.Close()
}

// awaitLeader returns once n knows id as its leader, so that a test's
// crash finds the followers already following.
func awaitLeader(t *testing.T, n *raftNode, id raft.ServerID) {
	t.Helper()
	changes := leaderChanges(t, n)
	if _, got := n.raft.LeaderWithID(); got == id {
		return
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-changes:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("the follower has not heard from leader %s", id)
		}
	}
}

// awaitCaughtUp returns once n holds the leader's whole log, so that
// either follower can win the election a crash starts. hashicorp/raft sends
// no event when a follower stores an entry, so this polls, against a
// deadline.
func awaitCaughtUp(t *testing.T, n, leader *raftNode) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.raft.LastIndex() < leader.raft.LastIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("the follower is at index %d, the leader at %d", n.raft.LastIndex(), leader.raft.LastIndex())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leaderChanges reports, on the returned channel, every leader the node
// learns of.
func leaderChanges(t *testing.T, n *raftNode) <-chan raft.ServerID {
	t.Helper()
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(o)
	done := make(chan struct{})
	t.Cleanup(func() {
		n.raft.DeregisterObserver(o)
		close(done)
	})
	out := make(chan raft.ServerID, 16)
	go func() {
		for {
			select {
			case ob := <-obs:
				if id := ob.Data.(raft.LeaderObservation).LeaderID; id != "" {
					select {
					case out <- id:
					case <-done:
						return
					}
				}
			case <-done:
				return
			}
		}
	}()
	return out
}

// TestCrashedLeaderIsReplacedAtOnce: with heartbeat and election timeouts of
// 5 s on the followers, a new leader is elected well before 5 s after the
// leader's process dies, because the followers see its connections close
// and its port refuse.
func TestCrashedLeaderIsReplacedAtOnce(t *testing.T) {
	const slow = 5 * time.Second
	nodes, leader, probes := slowTimeoutsCluster(t, slow)
	old := raft.ServerID(fmt.Sprintf("b%d", leader))
	var changes []<-chan raft.ServerID
	for i, n := range nodes {
		if i != leader {
			changes = append(changes, leaderChanges(t, n))
		}
	}
	start := time.Now()
	crash(t, nodes[leader])

	deadline := time.After(slow)
	var elected raft.ServerID
	for elected == "" {
		select {
		case id := <-changes[0]:
			if id != old {
				elected = id
			}
		case id := <-changes[1]:
			if id != old {
				elected = id
			}
		case <-deadline:
			var seen []probeResult
			for len(probes) > 0 {
				seen = append(seen, <-probes)
			}
			t.Fatalf("no new leader within %s of the crash: the followers waited out their timeouts (probes: %v)", slow, seen)
		}
	}
	took := time.Since(start)
	t.Logf("new leader %s %s after the crash of %s (follower timeouts %s)", elected, took.Round(time.Millisecond), old, slow)
	if took >= slow/2 {
		t.Errorf("the new leader took %s, not much less than the %s timeouts", took, slow)
	}
	var gone, elections int
	for len(probes) > 0 {
		switch <-probes {
		case probeGone:
			gone++
		case probeElection:
			elections++
		}
	}
	if gone == 0 || elections == 0 {
		t.Errorf("probes saw the leader gone %d times and started %d elections; want both at least once", gone, elections)
	}
}

// TestLiveLeaderKeepsLeading: when the connections of a live leader close
// (a pool's churn, a middlebox), the followers probe it, find it answering
// and start no election.
func TestLiveLeaderKeepsLeading(t *testing.T) {
	nodes, leader, probes := slowTimeoutsCluster(t, 5*time.Second)
	l := nodes[leader]
	term := l.raft.CurrentTerm()
	closeConns(t, l)
	// Both followers had a connection from the leader: both probe.
	for range len(nodes) - 1 {
		select {
		case r := <-probes:
			if r != probeAlive {
				t.Fatalf("a probe of the live leader found it %s", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a follower did not probe the leader after its connections closed")
		}
	}
	stillLeading(t, l, term, probes)
}

// TestLeaderWithRefusedPortKeepsLeading: a live leader whose Raft port
// refuses connections (a firewall rule, a proxy in front of it) looks gone
// to a probe, but it goes on sending heartbeats over the connections it
// opens itself, and the followers leave it leading.
func TestLeaderWithRefusedPortKeepsLeading(t *testing.T) {
	nodes, leader, probes := slowTimeoutsCluster(t, 5*time.Second)
	l := nodes[leader]
	term := l.raft.CurrentTerm()
	l.stream.ln.Close()
	closeConns(t, l)
	for range len(nodes) - 1 {
		select {
		case r := <-probes:
			if r != probeHeard {
				t.Fatalf("a probe of a leader with a refused port that still sends heartbeats found it %s, want %s", r, probeHeard)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a follower did not probe the leader after its connections closed")
		}
	}
	stillLeading(t, l, term, probes)
}

// closeConns closes every Raft connection of n, as a middlebox would.
func closeConns(t *testing.T, n *raftNode) {
	t.Helper()
	n.stream.mu.Lock()
	defer n.stream.mu.Unlock()
	if len(n.stream.conns) == 0 {
		t.Fatal("the server had no Raft connections to close")
	}
	for c := range n.stream.conns {
		c.NetConn().Close()
	}
}

// stillLeading checks that l leads in term and takes a write, and that no
// probe result in probes is an election.
func stillLeading(t *testing.T, l *raftNode, term uint64, probes chan probeResult) {
	t.Helper()
	if err := l.raft.Apply([]byte("x"), 5*time.Second).Error(); err != nil {
		t.Fatalf("the leader no longer takes writes: %v", err)
	}
	if got := l.raft.CurrentTerm(); got != term || l.raft.State() != raft.Leader {
		t.Errorf("after the probes: term %d state %s, want term %d and still leader", got, l.raft.State(), term)
	}
	for len(probes) > 0 {
		if r := <-probes; r == probeElection {
			t.Errorf("a follower started an election against a live leader")
		}
	}
}

// TestProbeOverSockets: what a probe through the stream layer finds at a
// closed port, at one that accepts and closes at once, and at one that
// accepts and never answers.
func TestProbeOverSockets(t *testing.T) {
	o := testOptions(t).withDefaults()
	nodes, _ := bareNodes(t, o)
	w := &crashWatch{stream: nodes[0].stream, timeout: 300 * time.Millisecond}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	listen := func(serve func(net.Conn)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				serve(c)
			}
		}()
		return ln.Addr().String()
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	hangs := make(chan net.Conn, 4)
	for _, tc := range []struct {
		name string
		addr string
		want probeResult
	}{
		{"closed port", closedAddr, probeGone},
		{"accepts and closes", listen(func(c net.Conn) { c.Close() }), probeGone},
		{"accepts and never answers", listen(func(c net.Conn) { hangs <- c }), probeUnknown},
		{"a live root", nodes[1].stream.Addr().String(), probeAlive},
	} {
		if got := w.probe(raft.ServerAddress(tc.addr)); got != tc.want {
			t.Errorf("%s: probe found %s, want %s", tc.name, got, tc.want)
		}
	}
	for len(hangs) > 0 {
		held = append(held, <-hangs)
	}
}

func TestCrashElectionCanBeTurnedOff(t *testing.T) {
	o := testOptions(t).withDefaults()
	o.Raft.NoCrashElection = true
	nodes, _ := bareNodes(t, o)
	nodes[0].watchCrashes("b0", o.Raft, o.Logger, nil)
	if nodes[0].watch != nil {
		t.Fatal("NoCrashElection set, and the crash watch runs")
	}
	if f := nodes[0].stream.closed.Load(); f != nil {
		t.Fatal("NoCrashElection set, and the stream layer reports closed connections")
	}
}
