package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// Internal, leader-only operations. Followers forward them to the leader over
// mutual TLS; only root servers of the network may call them.

type applyRequest struct {
	Command []byte `json:"command"`
	// LastIndex is the forwarding server's last Raft log index when it
	// sent the command: the leader's commit notice (commitnotice.go)
	// names it as the previous entry. It travels in the lastIndexHeader,
	// not in the body, which a leader of an earlier release decodes
	// strictly and would refuse; such a leader ignores the header, and a
	// request without it (0) is told its commit by the barrier of
	// nudgeCommits.
	LastIndex uint64 `json:"-"`
}

// lastIndexHeader carries applyRequest.LastIndex.
const lastIndexHeader = "Keymesh-Last-Index"

func (r applyRequest) header() http.Header {
	if r.LastIndex == 0 {
		return nil
	}
	return http.Header{lastIndexHeader: {strconv.FormatUint(r.LastIndex, 10)}}
}

// headered is a request body that also sets request headers.
type headered interface{ header() http.Header }

type applyResponse struct {
	Index uint64         `json:"index"`
	Error *api.ErrorBody `json:"error,omitempty"`
}

// err rebuilds the state machine's rejection, if any, so that errors.Is
// works with the fsm sentinels on the forwarding side too.
func (r applyResponse) err() error {
	if r.Error == nil {
		return nil
	}
	return fsm.ErrorFromCode(r.Error.Code, r.Error.Message)
}

type readIndexResponse struct {
	Index uint64 `json:"index"`
}

type addVoterRequest struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
}

type removeServerRequest struct {
	Name string `json:"name"`
}

// errLeaderChanged cancels a forwarded call whose target stopped leading.
var errLeaderChanged = errors.New("cluster: the leader changed while the call was in flight")

// idempotentCalls may be sent again after their fate became unknown.
var idempotentCalls = map[string]bool{"/v1/internal/read-index": true, "/v1/internal/add-voter": true}

// leaderCall POSTs one internal operation to the leader at addr. retry
// reports that the request was not delivered (or the receiver was not the
// leader, or an idempotent call's leader changed) and may be sent again.
// The call is cut short as soon as this server sees another leader (or
// none), so a frozen leader does not hold a write until the client's
// deadline: it comes back as ErrUnknownOutcome at once.
func (s *Server) leaderCall(ctx context.Context, addr, path string, in, out any) (retry bool, err error) {
	callCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go s.cancelOnLeaderChange(callCtx, addr, cancel)
	return s.internalPost(ctx, callCtx, addr, path, in, out)
}

// memberCall POSTs one internal operation to the member at addr, leader or
// not (seal keys), within ctx.
func (s *Server) memberCall(ctx context.Context, addr, path string, in, out any) error {
	_, err := s.internalPost(ctx, ctx, addr, path, in, out)
	return err
}

// internalPost makes one internal call in callCtx (ctx is the caller's);
// see leaderCall for retry.
func (s *Server) internalPost(ctx, callCtx context.Context, addr, path string, in, out any) (retry bool, err error) {
	body, err := json.Marshal(in)
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(callCtx, http.MethodPost, "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if h, ok := in.(headered); ok {
		for k, v := range h.header() {
			req.Header[k] = v
		}
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		if notSent(err) {
			return true, fmt.Errorf("cluster: root server %s unreachable: %w", addr, err)
		}
		if idempotentCalls[path] && ctx.Err() == nil {
			return true, fmt.Errorf("cluster: %s at %s: %w", path, addr, err)
		}
		if errors.Is(context.Cause(callCtx), errLeaderChanged) {
			return false, fmt.Errorf("%w (%w)", ErrUnknownOutcome, errLeaderChanged)
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
		}
		return false, fmt.Errorf("%w: forwarding to %s: %w", ErrUnknownOutcome, addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return false, fmt.Errorf("%w: reading the leader's answer: %w", ErrUnknownOutcome, err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			return false, fmt.Errorf("cluster: leader's answer to %s: %w", path, err)
		}
		return false, nil
	}
	var eb api.ErrorEnvelope
	_ = json.Unmarshal(b, &eb)
	switch eb.Error.Code {
	case api.CodeNotLeader:
		return true, ErrNoLeader
	case api.CodeUnknownOutcome:
		return false, ErrUnknownOutcome
	case "":
		return false, fmt.Errorf("cluster: leader answered %s to %s", resp.Status, path)
	}
	return false, &api.APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

// cancelOnLeaderChange cancels a call to addr once this server no longer
// sees addr's server as the leader.
func (s *Server) cancelOnLeaderChange(ctx context.Context, addr string, cancel context.CancelCauseFunc) {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			cancel(ErrShutdown)
			return
		case <-t.C:
			if s.leaderAPI() != addr {
				cancel(errLeaderChanged)
				return
			}
		}
	}
}

// notSent reports whether a request failed before any byte reached the
// server (so resending it cannot duplicate a write).
func notSent(err error) bool {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func (s *Server) handleInternalApply(w http.ResponseWriter, r *http.Request) {
	var req applyRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Command) == 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "command is empty")
		return
	}
	// A missing or malformed index only costs the forwarder the barrier.
	req.LastIndex, _ = strconv.ParseUint(r.Header.Get(lastIndexHeader), 10, 64)
	if _, err := fsm.Decode(req.Command); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	idx, err, retry := s.applyLocal(r.Context(), req.Command)
	if retry {
		writeError(w, http.StatusServiceUnavailable, api.CodeNotLeader, "this server does not lead; ask again")
		return
	}
	if idx != 0 {
		// The follower that forwarded it answers once it has applied it.
		s.noticeCommit(rootCaller(r), req.LastIndex, idx)
	}
	var ce *fsm.CommandError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, applyResponse{Index: idx})
	case errors.As(err, &ce):
		writeJSON(w, http.StatusOK, applyResponse{Index: idx, Error: &api.ErrorBody{Code: fsm.ErrorCode(err), Message: err.Error()}})
	default:
		s.writeErr(w, err)
	}
}

func (s *Server) handleInternalReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := s.leaderReadIndex()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, api.CodeNotLeader, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, readIndexResponse{Index: idx})
}

// handleInternalAddVoter adds an admitted server as a voter. A joining
// server may ask any root server; a follower forwards the call to the
// leader. What guards it is the admission: the name must have a record
// made by a join with a root-join token, with the same Raft address.
func (s *Server) handleInternalAddVoter(w http.ResponseWriter, r *http.Request) {
	var req addVoterRequest
	if !s.decode(w, r, &req) {
		return
	}
	id, _ := s.callerID(r)
	if id.Name != req.Name {
		if _, isRoot := s.store.Server(id.Name); !isRoot {
			writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("server %q may only add itself, not %q", id.Name, req.Name))
			return
		}
	}
	err := s.onLeader(r.Context(), "/v1/internal/add-voter", req, &struct{}{}, func(ctx context.Context) error {
		return s.addVoter(ctx, req.Name, req.RaftAddr)
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleInternalRemove(w http.ResponseWriter, r *http.Request) {
	var req removeServerRequest
	if !s.decode(w, r, &req) {
		return
	}
	if s.node.raft.State() != raft.Leader {
		writeError(w, http.StatusServiceUnavailable, api.CodeNotLeader, "this server does not lead; ask again")
		return
	}
	if err := s.removeServer(r.Context(), req.Name); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// nudgeFollowers asks nudgeCommits for a round; it never blocks.
func (s *Server) nudgeFollowers() {
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// nudgeCommits tells the followers the commit index as soon as a forwarded
// command is committed. hashicorp/raft sends the commit index only with the
// next AppendEntries: the next entries, or Raft's commit timeout (20-40 ms)
// later; etcd's Raft broadcasts it at once. A follower answers a write it
// forwarded once it has applied it (read-your-writes on that server), so
// without this one writer through a follower waited the commit timeout on
// every write: 27 ms p50 against 1.5 ms through the leader. A barrier is
// the smallest entry that makes the leader replicate: its AppendEntries
// carries the commit index, and a follower applies up to it as soon as it
// has stored the barrier. One barrier at a time; the requests that come
// while it runs are one more round, so under load it adds at most one small
// entry to each Raft batch.
func (s *Server) nudgeCommits(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.nudge:
		}
		if s.node.raft.State() != raft.Leader {
			continue
		}
		if err := s.node.raft.Barrier(s.opts.Limits.RequestTimeout).Error(); err != nil && !errors.Is(err, raft.ErrNotLeader) {
			s.log.Debug("commit nudge", "error", err)
		}
	}
}
