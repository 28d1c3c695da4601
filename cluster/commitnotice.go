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
// the forwarding follower could answer. A commit notice is the
// AppendEntries the leader's replication would send once it had nothing new
// to send, only sooner: no entries, the leader's term, its commit index, and
// as previous entry one the follower held when it forwarded the write (it
// sends its last log index with the write; the leader puts its own term of
// that entry beside it). The follower's Raft checks it like any
// AppendEntries: an older term is refused; a previous entry whose term
// differs from its own is refused; otherwise every entry up to that one is
// the leader's (Raft's log matching), every entry after it came from this
// leader in this term (a follower's log only takes entries from the leader
// of its current term), and it commits up to the leader's commit index or
// its own last entry, whichever is lower. Nothing is written to its disk.
//
// The notice goes only to the follower that forwarded the write, over
// Raft's own mutual-TLS transport. When the follower did not yet hold the
// write's entry (its replication was still on the way), the notice is sent
// again, a few times; then, or when it cannot be sent, the barrier of
// nudgeCommits stands in.

// noticeTries is how many notices one forwarded write gets before the
// barrier stands in.
const noticeTries = 4

// commitNotice is a pending notice to one follower.
type commitNotice struct {
	addr  raft.ServerAddress
	prev  uint64 // an entry the follower held when it forwarded the write
	index uint64 // the forwarded write's index: the follower must commit at least this far
	tries int
}

// commitNotices holds the notices waiting for the next round, at most one
// per follower (a later write's notice covers an earlier one's).
type commitNotices struct {
	mu      sync.Mutex
	pending map[raft.ServerID]commitNotice
	ready   chan struct{} // one token: a round is wanted
}

func newCommitNotices() *commitNotices {
	return &commitNotices{pending: make(map[raft.ServerID]commitNotice), ready: make(chan struct{}, 1)}
}

// add queues n for follower id, merging it with what is pending for it.
func (c *commitNotices) add(id raft.ServerID, n commitNotice) {
	c.mu.Lock()
	if old, ok := c.pending[id]; ok {
		n.prev = max(n.prev, old.prev)
		n.index = max(n.index, old.index)
		n.tries = min(n.tries, old.tries)
	}
	c.pending[id] = n
	c.mu.Unlock()
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// take empties the queue.
func (c *commitNotices) take() map[raft.ServerID]commitNotice {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	c.pending = make(map[raft.ServerID]commitNotice, len(p))
	return p
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

// tellCommits sends the queued notices, one round at a time; the notices
// queued while a round runs are the next round.
func (s *Server) tellCommits(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.notices.ready:
		}
		batch := s.notices.take()
		var wg sync.WaitGroup
		for id, n := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.tellCommit(id, n)
			}()
		}
		wg.Wait()
	}
}

// Results of a commit notice (keymesh_raft_commit_notices_total).
const (
	noticeTold    = "told"    // the follower committed the write's index
	noticeAgain   = "again"   // it did not hold the entry yet; sent again
	noticeBarrier = "barrier" // the barrier of nudgeCommits stood in
)

// tellCommit sends one notice to follower id and queues it again, or falls
// back to the barrier, when the follower did not commit n.index.
func (s *Server) tellCommit(id raft.ServerID, n commitNotice) {
	last, err := s.sendCommitNotice(id, n)
	switch {
	case err == nil && last >= n.index:
		s.metrics.notices.WithLabelValues(noticeTold).Inc()
	case err == nil && n.tries+1 < noticeTries:
		s.metrics.notices.WithLabelValues(noticeAgain).Inc()
		n.tries++
		s.notices.add(id, n)
	default:
		if err != nil {
			s.log.Debug("commit notice", "server", id, "error", err)
		}
		s.metrics.notices.WithLabelValues(noticeBarrier).Inc()
		s.nudgeFollowers()
	}
}

// errNoticeNotSent says why a notice was not sent; the barrier stands in.
type errNoticeNotSent string

func (e errNoticeNotSent) Error() string { return "cluster: commit notice not sent: " + string(e) }

// sendCommitNotice sends the AppendEntries of a notice and returns the
// follower's last log index when it took it in (its commit index is then
// at least min(that, the leader's commit index)). A refused notice is an
// error.
func (s *Server) sendCommitNotice(id raft.ServerID, n commitNotice) (uint64, error) {
	r := s.node.raft
	if r.State() != raft.Leader {
		return 0, errNoticeNotSent("this server no longer leads")
	}
	term := r.CurrentTerm()
	var prev raft.Log
	if err := s.node.logs.GetLog(n.prev, &prev); err != nil {
		// The follower's entry is not (or no longer) in this log.
		return 0, errNoticeNotSent("the follower's last entry is not in the leader's log")
	}
	if prev.Term > term {
		return 0, errNoticeNotSent("the follower's last entry is of a later term")
	}
	self := s.node.transport.EncodePeer(raft.ServerID(s.name), s.node.transport.LocalAddr())
	req := raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(s.name), Addr: self},
		Term:              term,
		PrevLogEntry:      prev.Index,
		PrevLogTerm:       prev.Term,
		LeaderCommitIndex: r.CommitIndex(),
	}
	var resp raft.AppendEntriesResponse
	if err := s.node.transport.AppendEntries(id, n.addr, &req, &resp); err != nil {
		return 0, err
	}
	if !resp.Success {
		return 0, errNoticeNotSent("the follower refused it")
	}
	return resp.LastLog, nil
}
