package fsm

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Default bounds of the change history; see Changes.
const (
	// DefaultTombstoneLimit is how many tombstones the replicated state keeps.
	DefaultTombstoneLimit = 10_000
	// defaultJournalLimit is how many recent changes each replica keeps in
	// memory to answer Changes without scanning.
	defaultJournalLimit = 1 << 16
)

// Result is what Apply returns for one log entry.
type Result struct {
	Index   uint64  // the entry's index
	Type    MsgType // the type byte as found in the entry
	Err     error   // nil, or a *CommandError: the command was rejected and changed nothing
	Ignored bool    // an unknown type carrying IgnoreUnknownFlag was skipped
}

// Store is the replicated state machine. Apply must be called by one
// goroutine at a time, in log order; everything else may be called
// concurrently with it.
type Store struct {
	mu     sync.RWMutex
	st     *state
	index  atomic.Uint64
	notify chan struct{} // closed and replaced on every apply and restore

	hash atomic.Pointer[string] // cached Hash(); nil after a change

	// Live-only bookkeeping, rebuilt on Restore and never snapshotted.
	tokenIDs     map[string]string              // join token id -> hash
	pending      pendingIndex                   // pending registrations by node id and source
	dnsOwners    map[string]string              // DNS name -> the node whose record holds it
	nodeKeys     map[string]map[string]struct{} // node id -> the kids of its keys in the JWKS
	tombQueue    []tombRef                      // tombstones in the order they were made (may hold stale entries)
	journal      []change                       // recent changes in index order
	journalFloor uint64                         // the journal holds every change after this index
	tableIndex   [numTables]uint64              // the index of each table's last change (see TableIndex)

	tombLimit    int // same on every replica: part of the determinism
	journalLimit int
}

type change struct {
	index uint64
	table tableID
	key   string
}

type tombRef struct {
	index uint64
	key   string // table id byte + key
}

// New returns an empty store at index 0.
func New() *Store {
	return &Store{
		st:           newState(),
		notify:       make(chan struct{}),
		tokenIDs:     map[string]string{},
		nodeKeys:     map[string]map[string]struct{}{},
		pending:      newPendingIndex(),
		dnsOwners:    map[string]string{},
		tombLimit:    DefaultTombstoneLimit,
		journalLimit: defaultJournalLimit,
	}
}

// Index returns the index of the last applied log entry (0 for a new store).
func (s *Store) Index() uint64 { return s.index.Load() }

// Apply applies the log entry at index. It never reads the clock: the
// envelope's timestamp is "now". A rejected command (bad envelope, version,
// payload, or a state check) changes nothing in the state and comes back in
// Result.Err as a *CommandError; the index still advances, because the log
// entry is consumed, and every replica rejects it the same way.
//
// Apply panics on an unknown command type without IgnoreUnknownFlag (see
// IgnoreUnknownFlag). An index not above Index() is refused with ErrInvalid
// and does not advance the index.
func (s *Store) Apply(index uint64, data []byte) Result {
	res := Result{Index: index}
	if len(data) > 0 {
		res.Type = MsgType(data[0])
		if !res.Type.Known() {
			if res.Type&IgnoreUnknownFlag == 0 {
				panic(fmt.Sprintf("fsm: unknown command type %#02x at index %d: this replica is older than the log; stop it and upgrade it before it applies anything else", data[0], index))
			}
			res.Ignored = true
		}
	}
	var cmd payload
	var now time.Time
	var cerr *CommandError
	if !res.Ignored {
		cmd, now, cerr = prepare(data)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if last := s.index.Load(); index <= last {
		res.Ignored = false
		res.Err = &CommandError{Type: res.Type, Err: ErrInvalid, Detail: fmt.Sprintf("index %d is not after the last applied index %d", index, last)}
		return res
	}
	switch {
	case res.Ignored:
	case cerr != nil:
		cerr.Type = res.Type
		res.Err = cerr
	default:
		tx := &txn{s: s, st: s.st, index: index, now: now}
		if err := cmd.apply(tx); err != nil {
			if tx.mutated {
				panic(fmt.Sprintf("fsm: %v rejected after changing the state at index %d: %v", res.Type, index, err))
			}
			err.Type = res.Type
			res.Err = err
		}
		if tx.mutated {
			s.hash.Store(nil)
			s.trimTombs()
			s.trimJournal()
		}
	}
	s.index.Store(index)
	close(s.notify)
	s.notify = make(chan struct{})
	return res
}

// prepare decodes and checks a command of a known type without looking at
// the state.
func prepare(data []byte) (payload, time.Time, *CommandError) {
	env, err := Decode(data)
	if err != nil {
		return nil, time.Time{}, err.(*CommandError)
	}
	if cur, _ := CurrentVersion(env.Type); env.Version > cur {
		return nil, env.Time, fail(ErrVersion, "version %d, this replica knows up to %d", env.Version, cur)
	}
	p := newPayload(env.Type)
	if err := strictUnmarshal(env.Payload, p); err != nil {
		return nil, env.Time, fail(ErrInvalid, "payload: %v", err)
	}
	if err := p.check(env.Time); err != nil {
		return nil, env.Time, err
	}
	return p, env.Time, nil
}

// WaitIndex blocks until Index() > after, and returns it; or until ctx is
// done, returning Index() and ctx.Err(). It is woken by every Apply and
// Restore; it never reads the clock.
func (s *Store) WaitIndex(ctx context.Context, after uint64) (uint64, error) {
	for {
		s.mu.RLock()
		idx, ch := s.index.Load(), s.notify
		s.mu.RUnlock()
		if idx > after {
			return idx, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.index.Load(), ctx.Err()
		}
	}
}

// txn is one command being applied. Handlers check everything first and
// only then change the state, so that a rejection changes nothing.
type txn struct {
	s       *Store
	st      *state
	index   uint64
	now     time.Time
	mutated bool
}

type record interface{ meta() *Indexes }

// put stores v under key, setting its indexes.
func put[V any, P interface {
	*V
	record
}](tx *txn, t *table[V], id tableID, key string, v V) {
	m := t.mut()
	pm := P(&v).meta()
	if old, ok := m[key]; ok {
		pm.CreateIndex = P(&old).meta().CreateIndex
	} else {
		pm.CreateIndex = tx.index
	}
	pm.ModifyIndex = tx.index
	m[key] = v
	tx.touched(id, key, false)
}

// putKey stores a JWKS key, keeping the index of keys by node.
func (tx *txn) putKey(k JWK) {
	if old, ok := tx.st.jwks.m[k.KID]; ok && old.Node != k.Node {
		tx.s.unindexKey(old.Node, k.KID)
	}
	put(tx, &tx.st.jwks, tJWKS, k.KID, k)
	tx.s.indexKey(k.Node, k.KID)
}

// delKey drops a JWKS key, keeping the index of keys by node.
func (tx *txn) delKey(kid string) {
	if old, ok := tx.st.jwks.m[kid]; ok {
		tx.s.unindexKey(old.Node, kid)
	}
	del(tx, &tx.st.jwks, tJWKS, kid)
}

func (s *Store) indexKey(node, kid string) {
	if node == "" {
		return
	}
	kids := s.nodeKeys[node]
	if kids == nil {
		kids = map[string]struct{}{}
		s.nodeKeys[node] = kids
	}
	kids[kid] = struct{}{}
}

func (s *Store) unindexKey(node, kid string) {
	if kids := s.nodeKeys[node]; kids != nil {
		delete(kids, kid)
		if len(kids) == 0 {
			delete(s.nodeKeys, node)
		}
	}
}

// putReg stores a registration, keeping the index of pending ones.
func (tx *txn) putReg(r Registration) {
	if old, ok := tx.st.regs.m[r.ID]; ok {
		tx.s.pending.remove(old)
	}
	put(tx, &tx.st.regs, tRegs, r.ID, r)
	tx.s.pending.add(r)
}

// delReg removes a registration.
func (tx *txn) delReg(id string) {
	if old, ok := tx.st.regs.m[id]; ok {
		tx.s.pending.remove(old)
	}
	del(tx, &tx.st.regs, tRegs, id)
}

// putNode stores a node record, keeping the index of DNS names.
func (tx *txn) putNode(n Node) {
	if old, ok := tx.st.nodes.m[n.ID]; ok {
		for _, d := range old.DNSNames {
			if tx.s.dnsOwners[d] == n.ID {
				delete(tx.s.dnsOwners, d)
			}
		}
	}
	put(tx, &tx.st.nodes, tNodes, n.ID, n)
	for _, d := range n.DNSNames {
		tx.s.dnsOwners[d] = n.ID
	}
}

// pendingIndex counts pending registrations, by node id and by source,
// for the limits RegistrationCreate enforces. It is derived from the
// state (rebuilt on Restore), so every replica holds the same.
type pendingIndex struct {
	total    int
	byNode   map[string]string // node id -> registration id
	bySource map[string]int
}

func newPendingIndex() pendingIndex {
	return pendingIndex{byNode: map[string]string{}, bySource: map[string]int{}}
}

func (p *pendingIndex) add(r Registration) {
	if r.Status != RegistrationPending {
		return
	}
	p.total++
	p.byNode[r.NodeID] = r.ID
	if r.Source != "" {
		p.bySource[r.Source]++
	}
}

func (p *pendingIndex) remove(r Registration) {
	if r.Status != RegistrationPending {
		return
	}
	p.total--
	if p.byNode[r.NodeID] == r.ID {
		delete(p.byNode, r.NodeID)
	}
	if r.Source != "" {
		if p.bySource[r.Source]--; p.bySource[r.Source] <= 0 {
			delete(p.bySource, r.Source)
		}
	}
}

// del removes key, leaving a tombstone.
func del[V any](tx *txn, t *table[V], id tableID, key string) {
	delete(t.mut(), key)
	tx.touched(id, key, true)
}

func (tx *txn) touched(id tableID, key string, deleted bool) {
	tx.mutated = true
	s := tx.s
	s.journal = append(s.journal, change{index: tx.index, table: id, key: key})
	s.tableIndex[id] = tx.index
	tombs := &tx.st.tombs
	if deleted {
		tk := tombKey(id, key)
		tombs.mut()[tk] = tx.index
		s.tombQueue = append(s.tombQueue, tombRef{index: tx.index, key: tk})
		return
	}
	if len(tombs.m) == 0 {
		return
	}
	var buf [128]byte
	tk := append(append(buf[:0], byte(id)), key...)
	if _, ok := tombs.m[string(tk)]; ok {
		delete(tombs.mut(), string(tk))
	}
}

// trimTombs drops the oldest tombstones while there are more than the limit,
// all those of one index at a time (so the result depends only on the set
// of tombstones, not on the order a replica made them), and raises the
// floor to the index dropped.
func (s *Store) trimTombs() {
	st := s.st
	for len(st.tombs.m) > s.tombLimit && len(s.tombQueue) > 0 {
		idx := s.tombQueue[0].index
		for len(s.tombQueue) > 0 && s.tombQueue[0].index == idx {
			r := s.tombQueue[0]
			s.tombQueue = s.tombQueue[1:]
			if v, ok := st.tombs.m[r.key]; ok && v == r.index {
				delete(st.tombs.mut(), r.key)
				st.tombFloor = max(st.tombFloor, idx)
			}
		}
	}
	if len(s.tombQueue) > 2*len(st.tombs.m)+1024 {
		live := make([]tombRef, 0, len(st.tombs.m))
		for _, r := range s.tombQueue {
			if v, ok := st.tombs.m[r.key]; ok && v == r.index {
				live = append(live, r)
			}
		}
		s.tombQueue = live
	}
}

func (s *Store) trimJournal() {
	if len(s.journal) <= 2*s.journalLimit {
		return
	}
	drop := len(s.journal) - s.journalLimit
	s.journalFloor = s.journal[drop-1].index
	s.journal = slices.Clone(s.journal[drop:])
}

// rebuildDerived recomputes the live-only bookkeeping after Restore.
func (s *Store) rebuildDerived(index uint64) {
	st := s.st
	s.tokenIDs = make(map[string]string, len(st.tokens.m))
	for h, t := range st.tokens.m {
		s.tokenIDs[t.ID] = h
	}
	s.pending = newPendingIndex()
	for _, r := range st.regs.m {
		s.pending.add(r)
	}
	s.nodeKeys = map[string]map[string]struct{}{}
	for kid, k := range st.jwks.m {
		s.indexKey(k.Node, kid)
	}
	s.dnsOwners = map[string]string{}
	for _, n := range st.nodes.m {
		for _, d := range n.DNSNames {
			s.dnsOwners[d] = n.ID
		}
	}
	s.tombQueue = make([]tombRef, 0, len(st.tombs.m))
	for k, idx := range st.tombs.m {
		s.tombQueue = append(s.tombQueue, tombRef{index: idx, key: k})
	}
	slices.SortFunc(s.tombQueue, func(a, b tombRef) int {
		if a.index != b.index {
			if a.index < b.index {
				return -1
			}
			return 1
		}
		if a.key < b.key {
			return -1
		}
		if a.key > b.key {
			return 1
		}
		return 0
	})
	s.journal = nil
	s.journalFloor = index
	s.tableIndex = st.tableIndexes()
}

// tableIndexes computes each table's TableIndex from a restored state:
// the newest of its records' modify indexes and its tombstones, or the
// tombstone floor when that is above both (a deletion whose tombstone was
// dropped happened at or below the floor). The policy is never deleted.
func (st *state) tableIndexes() [numTables]uint64 {
	var out [numTables]uint64
	newest := func(id tableID, keys func(yield func(string, uint64) bool)) {
		for _, idx := range keys {
			out[id] = max(out[id], idx)
		}
	}
	newest(tServers, modIndexes(st.servers.m))
	newest(tCAs, modIndexes(st.cas.m))
	newest(tIssuers, modIndexes(st.issuers.m))
	newest(tTokens, modIndexes(st.tokens.m))
	for r := range st.revs.set.records() {
		out[tRevs] = max(out[tRevs], r.index)
	}
	newest(tAnchors, modIndexes(st.anchors.m))
	newest(tNodes, modIndexes(st.nodes.m))
	newest(tIssued, modIndexes(st.issued.m))
	newest(tJWKS, modIndexes(st.jwks.m))
	newest(tRegs, modIndexes(st.regs.m))
	newest(tRoutes, modIndexes(st.routes.m))
	for k, idx := range st.tombs.m {
		id := tableID(k[0])
		out[id] = max(out[id], idx)
	}
	for id := range numTables {
		if id != tPolicy {
			out[id] = max(out[id], st.tombFloor)
		}
	}
	out[tPolicy] = st.policy.ModifyIndex
	return out
}

// TableIndex returns the Raft index of the last change (a put or a
// delete) to table t, 0 if it has not changed since the store was new (or
// t names no table). A reader that saw a table at TableIndex i need not
// read it again while TableIndex is still i.
//
// Apply keeps it exact. After a Restore it is computed from the state
// (records' modify indexes, tombstones and the tombstone floor), which
// does not keep every deletion: it may then be above the true last change,
// never below it and never above Index, and the table's contents are the
// same at every index between the two.
func (s *Store) TableIndex(t Table) uint64 {
	id, ok := tableIDOf(t)
	if !ok {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tableIndex[id]
}
