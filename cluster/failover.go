package cluster

import (
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A follower that waits out the heartbeat timeout after its leader crashed
// loses between one and three timeouts: hashicorp/raft draws the timer
// between one and two times the timeout, renews it while the last contact is
// recent, and the other follower refuses to vote while it still knows a
// leader. When the leader's process is gone the follower can know it at
// once: the connections the leader opened to it close, and the leader's Raft
// port then refuses a new one (or whatever stands in front of it closes the
// connection before the TLS handshake). A crashWatch turns that into an
// election started there and then.
//
// Two things must hold. The probe of the leader's port is refused, reset
// or closed before the handshake completed: a completed handshake is a live
// leader, and a probe that times out proves nothing (a partition or an
// overloaded host looks like that). And nothing is heard for half the
// heartbeat timeout after the close, at least two and a half intervals of
// the leader's heartbeats, over a connection from the leader that is still
// open: a live leader whose port something refuses (a firewall rule, a
// proxy in front of it, a full accept queue) keeps sending heartbeats over
// the connections it opens itself, and is left alone, while a crashed
// leader's connections have all ended (an AppendEntries it sent before it
// died may finish after the first of them closed). An election somebody
// else started and this server voted in (a leadership transfer's, an
// earlier crash election's), before the close or after it, is left to
// Raft.
//
// The election is the one a leadership transfer starts (a TimeoutNow RPC
// that this server sends itself), so the other followers vote although they
// may not have noticed yet that the leader is gone. Votes still go only to a
// candidate whose log is at least as up to date as the voter's: Raft's
// safety does not depend on timing, and this changes only when an election
// starts. The followers go one after the other, in the order of their
// server IDs, stagger apart, so that two candidates do not split the vote;
// a later one goes only if it has heard from nobody and given its vote to
// nobody, so it cuts only into an election it refused (the earlier
// candidate's log was behind its own, and without its vote that candidate
// cannot win in a cluster of three).
type crashWatch struct {
	raft    *raft.Raft
	trans   *raft.NetworkTransport
	stream  *streamLayer
	id      raft.ServerID
	votes   raft.StableStore // where Raft keeps the term of its last vote
	quiet   time.Duration    // how long a gone leader must stay silent
	stagger time.Duration
	timeout time.Duration
	log     hclog.Logger
	observe func(probeResult)

	probing    atomic.Bool
	pending    atomic.Pointer[time.Time] // when a close came while a probe ran: probe again after it
	leaderTerm atomic.Uint64             // the term in which this server last learnt of a leader
	obs        *raft.Observer
	mu         sync.Mutex
	closed     bool
	stop       chan struct{}
	wg         sync.WaitGroup
}

// probeResult is what a probe of the leader's Raft port found, and what a
// gone leader led to.
type probeResult string

const (
	probeAlive   probeResult = "alive"   // the leader answered the TLS handshake
	probeGone    probeResult = "gone"    // refused, reset or closed before the handshake
	probeUnknown probeResult = "unknown" // timed out or failed otherwise
	// probeHeard is a gone port whose leader still sent heartbeats.
	probeHeard probeResult = "heard"
	// probeElection counts the elections a gone leader started here.
	probeElection probeResult = "election"
)

// watchCrashes has the stream layer tell n, as a follower, when a
// connection from its leader closes. observe, when set, sees every probe's
// result and every election it started.
func (n *raftNode) watchCrashes(id string, t RaftTimeouts, log hclog.Logger, observe func(probeResult)) {
	if t.NoCrashElection {
		return
	}
	w := &crashWatch{
		raft: n.raft, trans: n.transport, stream: n.stream, votes: n.logs, id: raft.ServerID(id),
		quiet: t.Heartbeat / 2, stagger: t.Heartbeat / 2, timeout: t.Heartbeat, log: log.Named("failover"),
		observe: observe, stop: make(chan struct{}),
	}
	// Raft calls an observer's filter in its own goroutine as it sets the
	// leader, after the term: the term read there is the leader's.
	w.obs = raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if l, ok := o.Data.(raft.LeaderObservation); ok && l.LeaderID != "" {
			w.leaderTerm.Store(w.raft.CurrentTerm())
		}
		return false
	})
	n.raft.RegisterObserver(w.obs)
	if _, l := n.raft.LeaderWithID(); l != "" {
		w.leaderTerm.Store(n.raft.CurrentTerm()) // learnt before the observer was there
	}
	n.watch = w
	n.stream.onClosed(w.peerClosed)
}

// keyLastVoteTerm is where hashicorp/raft keeps, in its stable store, the
// term of the last vote it granted (raft.go, persistVote).
var keyLastVoteTerm = []byte("LastVoteTerm")

// votedSince reports whether, since this server last learnt of a leader, an
// election began and this server gave its vote in it (to another server or
// itself). An election it was asked to vote in and refused (the candidate's
// log was behind its own) does not count.
func (w *crashWatch) votedSince() bool {
	term := w.raft.CurrentTerm()
	if term == w.leaderTerm.Load() {
		return false
	}
	voted, err := w.votes.GetUint64(keyLastVoteTerm)
	return err != nil || voted == term
}

// close stops w and waits for its probes.
func (w *crashWatch) close() {
	w.raft.DeregisterObserver(w.obs)
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// peerClosed is called when an accepted Raft connection from the root
// server peer ends. It probes the leader when peer is this follower's
// leader; a close that comes while a probe runs is probed again after it,
// counted from when it came.
func (w *crashWatch) peerClosed(peer string) { w.closedAt(peer, time.Now()) }

func (w *crashWatch) closedAt(peer string, since time.Time) {
	if w.raft.State() != raft.Follower {
		return
	}
	addr, leader := w.raft.LeaderWithID()
	if addr == "" || string(leader) != peer {
		return
	}
	at := closeAt{since: since, term: w.raft.CurrentTerm(), leaderTerm: w.leaderTerm.Load()}
	if !w.probing.CompareAndSwap(false, true) {
		w.pending.CompareAndSwap(nil, &since)
		return
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.probing.Store(false)
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.wg.Done()
		w.check(addr, leader, at)
		w.probing.Store(false)
		if p := w.pending.Swap(nil); p != nil {
			w.closedAt(peer, *p)
		}
	}()
}

// closeAt is when a connection from the leader closed, with the term then
// and the term in which this server had learnt of that leader.
type closeAt struct {
	since      time.Time
	term       uint64
	leaderTerm uint64
}

// check probes the leader at addr, whose connection closed at c, and, if
// it is gone, starts an election here when this server's turn comes.
func (w *crashWatch) check(addr raft.ServerAddress, leader raft.ServerID, c closeAt) {
	res := w.probe(addr)
	if res != probeGone {
		w.seen(res)
		if res == probeUnknown {
			w.log.Debug("the connection from the leader closed and a probe of its Raft port was inconclusive; waiting for the heartbeat timeout", "leader", leader)
		}
		return
	}
	turn, ok := w.turn(leader)
	if !ok {
		w.seen(res)
		return
	}
	t := time.NewTimer(time.Until(c.since.Add(w.quiet + time.Duration(turn)*w.stagger)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.stop:
		return
	}
	// Raft renews the last contact on every AppendEntries of a leader and
	// on every vote this server grants. A leader is heard only over a
	// connection of its that is still open: an AppendEntries that came
	// before a crashed leader's connections closed, and that Raft finished
	// after, renews the last contact too. (One opened since counts: a live
	// leader whose connections something keeps cutting may be between two.)
	if w.raft.LastContact().After(c.since) && w.stream.openFrom(string(leader), c.since) {
		if w.raft.CurrentTerm() == c.term {
			w.seen(probeHeard)
			w.log.Info("the leader's Raft port refuses connections but the leader is still heard; not starting an election",
				"leader", leader, "leader_addr", addr)
		}
		return // or another server's election had this one's vote
	}
	w.seen(res)
	if w.raft.State() != raft.Follower || w.votedSince() || w.leaderTerm.Load() != c.leaderTerm {
		return // an election is under way, this server's or one it voted in, or it has a new leader
	}
	w.log.Info("the leader's Raft port refuses connections and the leader is silent; starting an election without waiting for the heartbeat timeout",
		"leader", leader, "leader_addr", addr, "turn", turn)
	local := w.trans.LocalAddr()
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax,
		ID:              []byte(w.id),
		Addr:            w.trans.EncodePeer(w.id, local),
	}}
	if err := w.trans.TimeoutNow(w.id, local, req, &raft.TimeoutNowResponse{}); err != nil {
		w.log.Warn("could not start an election; the heartbeat timeout will", "error", err)
		return
	}
	w.seen(probeElection)
}

func (w *crashWatch) seen(r probeResult) {
	if w.observe != nil {
		w.observe(r)
	}
}

// probe dials the leader's Raft address with the root TLS configuration.
func (w *crashWatch) probe(addr raft.ServerAddress) probeResult {
	c, err := w.stream.Dial(addr, w.timeout)
	if err == nil {
		c.Close()
		return probeAlive
	}
	return classifyProbe(err)
}

// classifyProbe sorts a failed dial of a Raft port: a refusal, a reset or
// a close before the handshake completed means no Raft server is behind
// it; anything else (a timeout above all) proves nothing.
func classifyProbe(err error) probeResult {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return probeGone
	}
	return probeUnknown
}

// turn is this server's place among the voters that remain when leader is
// gone, in the order of their IDs; ok is false when this server is not one.
func (w *crashWatch) turn(leader raft.ServerID) (int, bool) {
	f := w.raft.GetConfiguration()
	if f.Error() != nil {
		return 0, false
	}
	var ids []raft.ServerID
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != leader {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	i := slices.Index(ids, w.id)
	return i, i >= 0
}
