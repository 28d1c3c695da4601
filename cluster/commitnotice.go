package cluster

import (
	"context"
	"net/http"
	"sync"

	"github.com/hashicorp/raft"
)

// Commit notices: how a follower that forwarded a write learns at once that
// it is committed.
//
// A follower answers a write it forwarded once it has applied it
// (read-your-writes on that server), and hashicorp/raft tells followers the
// commit index only with the next AppendEntries that carries entries, or
// after the commit timeout. The leader used to send a barrier for it: one
// more entry, so one more fsync on the leader and one on a follower before
// the forwarding follower could answer. A commit notice is instead an
// AppendEntries the leader's own replication could have sent: the
// follower sends its last log index with the write; the notice names that
// entry as the previous one (with the leader's term of it), carries the
// leader's entries after it up to the write's index, usually the write
// alone, and the write's index as the commit index. The follower's Raft
// takes it as any AppendEntries: an older term, or a previous entry of
// another term, is refused; entries it holds already are skipped, one it
// lacks (its replication still on the way) is appended, one of another
// term replaces its own; then it commits up to the write's index, the last
// entry of the notice, as Raft's rule for AppendEntries says. Where it held
// the entries already, nothing is written to its disk.
//
// The notice goes only to the follower the forwarding request's
// certificate names, over Raft's own mutual-TLS transport. When the leader
// cannot build it (the follower sent no index, its entry is not in the
// leader's log, too many entries lie between) or the follower refuses it,
// the barrier of nudgeCommits stands in.

// maxNoticeEntries bounds the entries of one commit notice (hashicorp/raft's
// default MaxAppendEntries); a follower further behind waits for the
// barrier.
const maxNoticeEntries = 64

// commitNotice is a pending notice to one follower.
type commitNotice struct {
	addr  raft.ServerAddress
	prev  uint64 // an entry the follower held when it forwarded the write
	index uint64 // the forwarded write's index: the follower commits this far
}

// commitNotices holds the notices waiting to be sent, at most one per
// follower (a later write's notice covers an earlier one's), and which
// followers have one on the way: each follower has at most one notice in
// flight, so that a follower that does not answer holds up only its own.
type commitNotices struct {
	mu       sync.Mutex
	pending  map[raft.ServerID]commitNotice
	inFlight map[raft.ServerID]bool
	ready    chan struct{} // one token: a notice may be sent
}

func newCommitNotices() *commitNotices {
	return &commitNotices{pending: make(map[raft.ServerID]commitNotice), inFlight: make(map[raft.ServerID]bool),
		ready: make(chan struct{}, 1)}
}

// add queues n for follower id, merging it with what is pending for it.
func (c *commitNotices) add(id raft.ServerID, n commitNotice) {
	c.mu.Lock()
	if old, ok := c.pending[id]; ok {
		n.prev = max(n.prev, old.prev)
		n.index = max(n.index, old.index)
	}
	c.pending[id] = n
	c.mu.Unlock()
	c.wake()
}

func (c *commitNotices) wake() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// take returns the pending notices of the followers with none in flight
// and marks them in flight.
func (c *commitNotices) take() map[raft.ServerID]commitNotice {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[raft.ServerID]commitNotice, len(c.pending))
	for id, n := range c.pending {
		if !c.inFlight[id] {
			out[id] = n
			c.inFlight[id] = true
			delete(c.pending, id)
		}
	}
	return out
}

// done ends the flight of follower id's notice.
func (c *commitNotices) done(id raft.ServerID) {
	c.mu.Lock()
	delete(c.inFlight, id)
	_, more := c.pending[id]
	c.mu.Unlock()
	if more {
		c.wake()
	}
}

// rootCallerKey carries the name of the root server that made an internal
// call (set by Server.internal once it checked the caller).
type rootCallerKey struct{}

func rootCaller(r *http.Request) string {
	name, _ := r.Context().Value(rootCallerKey{}).(string)
	return name
}

// noticeCommit arranges for the root server that forwarded the write
// committed at index to learn of its commit; prev is the last log index it
// sent with the write (0: it sent none, and the barrier stands in).
func (s *Server) noticeCommit(caller string, prev, index uint64) {
	rec, ok := s.store.Server(caller)
	if prev == 0 || !ok || rec.RaftAddr == "" || caller == s.name {
		s.metrics.notices.WithLabelValues(noticeBarrier).Inc()
		s.nudgeFollowers()
		return
	}
	s.notices.add(raft.ServerID(caller), commitNotice{addr: raft.ServerAddress(rec.RaftAddr), prev: prev, index: index})
}

// tellCommits sends the queued notices, each follower's one at a time. It
// does not wait for the notices on the way when it stops: each ends within
// the transport's timeout, or at once when the transport closes.
func (s *Server) tellCommits(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.notices.ready:
		}
		for id, n := range s.notices.take() {
			go func() {
				defer s.notices.done(id)
				if ctx.Err() == nil {
					s.tellCommit(id, n)
				}
			}()
		}
	}
}

// Results of a commit notice (keymesh_raft_commit_notices_total).
const (
	noticeTold    = "told"    // the follower committed the write's index
	noticeBarrier = "barrier" // the barrier of nudgeCommits stood in
)

// tellCommit sends one notice to follower id, or falls back to the barrier.
func (s *Server) tellCommit(id raft.ServerID, n commitNotice) {
	if err := s.sendCommitNotice(id, n); err != nil {
		s.log.Debug("commit notice", "server", id, "index", n.index, "error", err)
		s.metrics.notices.WithLabelValues(noticeBarrier).Inc()
		s.nudgeFollowers()
		return
	}
	s.metrics.notices.WithLabelValues(noticeTold).Inc()
}

// errNoticeNotSent says why a notice was not sent or not taken; the
// barrier stands in.
type errNoticeNotSent string

func (e errNoticeNotSent) Error() string { return "cluster: commit notice: " + string(e) }

// sendCommitNotice sends the AppendEntries of a notice; nil means the
// follower took it and committed n.index.
func (s *Server) sendCommitNotice(id raft.ServerID, n commitNotice) error {
	r := s.node.raft
	if n.prev == 0 || n.prev >= n.index || n.index-n.prev > maxNoticeEntries {
		return errNoticeNotSent("the follower's last entry is not just before the write")
	}
	term := r.CurrentTerm()
	var prev raft.Log
	if err := s.node.logs.GetLog(n.prev, &prev); err != nil {
		return errNoticeNotSent("the follower's last entry is not in the leader's log")
	}
	entries := make([]*raft.Log, 0, n.index-n.prev)
	for i := n.prev + 1; i <= n.index; i++ {
		e := new(raft.Log)
		if err := s.node.logs.GetLog(i, e); err != nil {
			return errNoticeNotSent("an entry of the write is not in the leader's log")
		}
		entries = append(entries, e)
	}
	if prev.Term > term || entries[len(entries)-1].Term != term {
		return errNoticeNotSent("the write is not of this leader's term")
	}
	if r.State() != raft.Leader || r.CurrentTerm() != term {
		return errNoticeNotSent("this server no longer leads")
	}
	self := s.node.transport.EncodePeer(raft.ServerID(s.name), s.node.transport.LocalAddr())
	req := raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(s.name), Addr: self},
		Term:              term,
		PrevLogEntry:      prev.Index,
		PrevLogTerm:       prev.Term,
		Entries:           entries,
		LeaderCommitIndex: n.index,
	}
	var resp raft.AppendEntriesResponse
	if err := s.node.transport.AppendEntries(id, n.addr, &req, &resp); err != nil {
		return err
	}
	if !resp.Success {
		return errNoticeNotSent("the follower refused it")
	}
	return nil
}
