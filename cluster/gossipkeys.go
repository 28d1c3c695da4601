package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// The gossip keyring. Node agents gossip encrypted (memberlist's
// AES-256-GCM keyring); the keys live in the replicated state sealed under
// the seal key, beside the AS root key in the CA record, and reach a node
// only over mutual TLS with its certificate (GET /v1/gossip/keys, and the
// renewal answer). The leader keeps the keyring moving, serf's way:
//
//   - with no key, it makes the first one, primary;
//   - a rotation (`keymesh gossip rotate-key`, or by itself when a node is
//     revoked) installs a new key; agents follow the keyring with blocking
//     queries and add it;
//   - GossipKeyStep later the new key becomes primary and the old one
//     retiring (agents encrypt with the new key, still read the old);
//   - GossipKeyStep after that the retiring key is removed.
//
// The phases are in the state, so a new leader carries on a rotation its
// predecessor began. A node revoked during a rotation makes the key being
// installed (which it may hold) be replaced by a fresh one.

// gossipKeyAAD binds a sealed gossip key to its network and purpose.
func gossipKeyAAD(network string) []byte { return []byte("keymesh gossip key\x00" + network) }

// newGossipKey makes a key and seals it under the seal key in force; after
// is the state index it is made at.
func (s *Server) newGossipKey(state string, now time.Time, after uint64) (fsm.GossipKey, error) {
	raw := make([]byte, 32)
	id := make([]byte, 6)
	if _, err := rand.Read(raw); err != nil {
		return fsm.GossipKey{}, err
	}
	if _, err := rand.Read(id); err != nil {
		return fsm.GossipKey{}, err
	}
	sealed, err := ca.Seal(s.currentSealKey(), raw, gossipKeyAAD(s.network), nil)
	if err != nil {
		return fsm.GossipKey{}, err
	}
	return fsm.GossipKey{ID: hex.EncodeToString(id), Sealed: sealed, State: state, Since: now, After: after}, nil
}

// openGossipKey opens a sealed gossip key with the seal key in force or
// the next one (a seal rotation in flight).
func (s *Server) openGossipKey(sealed []byte) ([]byte, error) {
	s.sealMu.Lock()
	cur, next := s.sealKey, s.sealNext
	s.sealMu.Unlock()
	raw, err := ca.Open(cur, sealed, gossipKeyAAD(s.network))
	if err != nil && next != nil {
		raw, err = ca.Open(next, sealed, gossipKeyAAD(s.network))
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: a gossip key does not open with this server's seal keys: %w", err)
	}
	return raw, nil
}

// resealGossipKeys seals the keyring of rec under key (a seal rotation).
func (s *Server) resealGossipKeys(rec fsm.CA, key []byte) ([]fsm.GossipKey, error) {
	out := slices.Clone(rec.GossipKeys)
	for i, k := range out {
		raw, err := s.openGossipKey(k.Sealed)
		if err != nil {
			return nil, err
		}
		if out[i].Sealed, err = ca.Seal(key, raw, gossipKeyAAD(s.network), nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// gossipKeyring is the keyring of the state as a node or an operator gets
// it; withKeys opens the keys (for nodes only).
func (s *Server) gossipKeyring(withKeys bool) (api.GossipKeyring, error) {
	rec, ok := s.store.CA(s.network)
	if !ok {
		return api.GossipKeyring{}, errors.New("cluster: no CA in the state")
	}
	out := api.GossipKeyring{Network: s.network, Index: rec.ModifyIndex, Keys: []api.GossipKey{}}
	for _, k := range rec.GossipKeys {
		g := api.GossipKey{ID: k.ID, State: k.State, Since: k.Since}
		if withKeys {
			raw, err := s.openGossipKey(k.Sealed)
			if err != nil {
				return api.GossipKeyring{}, err
			}
			g.Key = raw
		}
		out.Keys = append(out.Keys, g)
	}
	return out, nil
}

// rotateGossipKeyNow starts a rotation on the leader (an operator's
// `keymesh gossip rotate-key`).
func (s *Server) rotateGossipKeyNow(ctx context.Context) error {
	if s.node.raft.State() != raft.Leader {
		return raft.ErrNotLeader
	}
	for range 5 {
		err := s.gossipStep(ctx, true)
		if !errors.Is(err, errKeyringMoved) {
			return err
		}
	}
	return fmt.Errorf("cluster: the CA record kept changing while the gossip key rotation was proposed; retry `keymesh gossip rotate-key`: %w", fsm.ErrConflict)
}

// errKeyringMoved: the CA record changed between the read and the
// proposal (compare-and-set); the next round looks again.
var errKeyringMoved = errors.New("cluster: the CA record moved")

// runGossipKeys moves the keyring on the leader, on every state change
// and every quarter step. What it does next follows from the state alone
// (the keyring's phases and the newest node revocation's index), so a
// failed proposal, a conflict or a new leader loses nothing: the next
// round sees the same thing due.
func (s *Server) runGossipKeys(ctx context.Context) error {
	step := s.opts.GossipKeyStep
	tick := time.NewTicker(max(step/4, 50*time.Millisecond))
	defer tick.Stop()
	changed := make(chan struct{}, 1)
	go func() {
		var at uint64
		for {
			idx, err := s.store.WaitIndex(ctx, at)
			if err != nil {
				return
			}
			at = idx
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	var seen, lastRevoked uint64
	leading := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
		}
		if s.node.raft.State() != raft.Leader || s.readyTerm.Load() != s.node.raft.CurrentTerm() {
			leading = false
			continue
		}
		// The index of the newest node revocation: all of them once per
		// term, then what changed.
		idx := s.store.Index()
		if !leading {
			lastRevoked = 0
			for _, r := range s.store.Revocations() {
				if r.Kind == fsm.RevocationNode {
					lastRevoked = max(lastRevoked, r.CreateIndex)
				}
			}
			leading = true
		} else if idx > seen {
			for _, t := range s.store.Changes(seen).Tables {
				if t.Table != fsm.TableRevocations {
					continue
				}
				for _, key := range t.Put {
					if id, isNode := strings.CutPrefix(key, string(fsm.RevocationNode)+":"); isNode {
						if r, ok := s.store.Revoked(fsm.RevocationNode, id); ok {
							lastRevoked = max(lastRevoked, r.CreateIndex)
						}
					}
				}
			}
		}
		seen = idx
		rec, ok := s.store.CA(s.network)
		if !ok {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, s.opts.Limits.RequestTimeout)
		err := s.gossipStep(sctx, lastRevoked > newestGossipKey(rec.GossipKeys))
		cancel()
		if err != nil && !errors.Is(err, errKeyringMoved) && ctx.Err() == nil {
			s.log.Warn("gossip keyring step failed; retrying", "error", err)
		}
	}
}

// newestGossipKey is the state index the newest key (the primary or the
// one being installed; a retiring key is older) was made after.
func newestGossipKey(keys []fsm.GossipKey) uint64 {
	var after uint64
	for _, k := range keys {
		if k.State != fsm.GossipKeyRetiring {
			after = max(after, k.After)
		}
	}
	return after
}

// gossipStep proposes the keyring's next phase, if one is due: the first
// key; with rotate, a fresh installed key (replacing one being installed,
// on its schedule, so that revocations in a row do not hold a rotation
// back); the installed key made primary after a step; the retiring key
// removed after a step. The CA record is compare-and-set under caMu, which
// a seal rotation holds too (a key is never sealed under a seal key on its
// way out).
func (s *Server) gossipStep(ctx context.Context, rotate bool) error {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	rec, ok := s.store.CA(s.network)
	if !ok {
		return nil
	}
	now, at := s.opts.Clock(), s.store.Index()
	step := s.opts.GossipKeyStep
	keys := slices.Clone(rec.GossipKeys)
	var what string
	switch {
	case len(keys) == 0:
		k, err := s.newGossipKey(fsm.GossipKeyPrimary, now, at)
		if err != nil {
			return err
		}
		keys, what = []fsm.GossipKey{k}, "first gossip key"
	case rotate:
		k, err := s.newGossipKey(fsm.GossipKeyInstalled, now, at)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(keys, func(k fsm.GossipKey) bool { return k.State == fsm.GossipKeyInstalled }); i >= 0 {
			k.Since = keys[i].Since // the replaced key's schedule
			keys = slices.Delete(keys, i, i+1)
		}
		if len(keys) >= fsm.MaxGossipKeys {
			keys = keys[:fsm.MaxGossipKeys-1] // the oldest retiring keys go now
		}
		keys, what = append(keys, k), "gossip key installed"
	default:
		i := slices.IndexFunc(keys, func(k fsm.GossipKey) bool { return k.State == fsm.GossipKeyInstalled })
		j := slices.IndexFunc(keys, func(k fsm.GossipKey) bool { return k.State == fsm.GossipKeyRetiring })
		switch {
		case i > 0 && now.Sub(keys[i].Since) >= step:
			used, old := keys[i], keys[0]
			old.State, old.Since = fsm.GossipKeyRetiring, now
			used.State = fsm.GossipKeyPrimary
			rest := slices.DeleteFunc(keys[1:], func(k fsm.GossipKey) bool { return k.ID == used.ID })
			keys, what = append([]fsm.GossipKey{used, old}, rest...), "gossip key in use"
		case i < 0 && j > 0 && now.Sub(keys[j].Since) >= step:
			keys, what = slices.Delete(keys, j, j+1), "old gossip key removed"
		default:
			return nil
		}
	}
	upd := rec
	upd.GossipKeys = keys
	idx, err := s.Propose(ctx, fsm.MsgCAUpdate, fsm.CAUpdate{CA: upd, ExpectModifyIndex: rec.ModifyIndex})
	if errors.Is(err, fsm.ErrConflict) {
		return errKeyringMoved
	}
	if err != nil {
		return err
	}
	s.log.Info(what, "key", keys[len(keys)-1].ID, "primary", keys[0].ID, "keys", len(keys), "index", idx)
	return nil
}

// handleGossipKeys answers a node the keyring, keys and all: over mutual
// TLS by its certificate (routeCert), so a revoked node gets nothing. A
// blocking query: with index, it waits (up to wait) for a keyring newer
// than that.
func (s *Server) handleGossipKeys(w http.ResponseWriter, r *http.Request, c caller) {
	if c.kind != ca.KindNode {
		writeError(w, http.StatusForbidden, api.CodeForbidden, "the gossip keyring is for nodes; present the node certificate")
		return
	}
	after, wait, ok := s.blockingParams(w, r, 0)
	if !ok {
		return
	}
	if after > 0 && wait > 0 {
		who := c.ctx.Subject
		if !s.blocking.acquire(who) {
			writeTooMany(w, time.Second, fmt.Sprintf("blocking queries (at most %d per client and %d in all on this server)",
				s.opts.Limits.MaxBlockingPerClient, s.opts.Limits.MaxBlockingQueries))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		unhook := context.AfterFunc(s.stopCtx, cancel)
		at := s.store.Index()
		for {
			if rec, ok := s.store.CA(s.network); !ok || rec.ModifyIndex > after {
				break
			}
			idx, err := s.store.WaitIndex(ctx, at)
			if err != nil {
				break
			}
			at = idx
		}
		unhook()
		cancel()
		s.blocking.release(who)
		// The node may have been revoked while it waited (its revocation
		// is what moves the keyring): ask again who it is.
		if _, err := s.authenticateCert(r); err != nil {
			s.writeAuthErr(w, err)
			return
		}
	}
	kr, err := s.gossipKeyring(true)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, kr)
}

// handleGossipKeyring shows operators the keyring without its keys.
func (s *Server) handleGossipKeyring(w http.ResponseWriter, _ *http.Request) {
	kr, err := s.gossipKeyring(false)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, kr)
}

// handleGossipRotate starts a rotation of the gossip key (`keymesh gossip
// rotate-key`), on the leader, and answers the keyring with the key
// being installed.
func (s *Server) handleGossipRotate(w http.ResponseWriter, r *http.Request) {
	if err := s.onLeader(r.Context(), "/v1/internal/gossip-rotate", struct{}{}, &struct{}{}, s.rotateGossipKeyNow); err != nil {
		s.writeErr(w, err)
		return
	}
	if err := s.ConsistentRead(r.Context()); err != nil {
		s.writeErr(w, err)
		return
	}
	s.handleGossipKeyring(w, r)
}

// handleInternalGossipRotate is the rotation forwarded to the leader.
func (s *Server) handleInternalGossipRotate(w http.ResponseWriter, r *http.Request) {
	if err := s.rotateGossipKeyNow(r.Context()); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
