package fsm

import (
	"maps"
	"slices"
	"sort"
)

// Changes says what changed after an index: the keys put (created or
// modified) and the keys deleted, per table. Keys are those of the tables:
// server name, network, issuer id, join token hash, "kind:id" for
// revocations, network, node id, "issuer/serial" for issued certificates,
// kid, registration id, "policy", and prefix.
type Changes struct {
	Since uint64 // the index asked about
	Index uint64 // the store's index when computed: ask again with Since = Index
	// Reset is set when deletions after Since may be missing because their
	// tombstones were dropped: reread the whole state.
	Reset  bool
	Tables []TableChanges // only tables with changes, in the order of the Table constants
}

// TableChanges lists one table's changed keys, each sorted. A key is in Put
// if the record exists now and changed after Since, in Deleted if it
// existed at some point after Since and does not exist now.
type TableChanges struct {
	Table   Table
	Put     []string
	Deleted []string
}

// Table returns the changes of table t (empty if none).
func (c Changes) Table(t Table) TableChanges {
	for _, tc := range c.Tables {
		if tc.Table == t {
			return tc
		}
	}
	return TableChanges{Table: t}
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Tables) == 0 && !c.Reset }

// Changes reports what changed after index since.
//
// Tombstones: a deleted record leaves a tombstone (its key and the deleting
// index) in the replicated state, so every replica, including one restored
// from a snapshot, answers the same. The state keeps the newest
// DefaultTombstoneLimit tombstones; when there are more, the oldest are
// dropped, all those of one index at a time, and the floor rises to that
// index. A reader whose since is below the floor gets Reset (unless this
// replica's in-memory journal still covers since, in which case the answer
// is exact).
//
// Cost: each replica keeps its recent changes in memory (the newest 65,536
// to 131,072, from its last restore on), so a reader that keeps up is
// answered in proportion to what changed; an older since costs a scan of
// every table.
func (s *Store) Changes(since uint64) Changes {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changesLocked(since)
}

func (s *Store) changesLocked(since uint64) Changes {
	c := Changes{Since: since, Index: s.index.Load()}
	if since >= c.Index {
		return c
	}
	var sets [numTables]map[string]struct{}
	if since >= s.journalFloor {
		i := sort.Search(len(s.journal), func(i int) bool { return s.journal[i].index > since })
		for _, ch := range s.journal[i:] {
			if sets[ch.table] == nil {
				sets[ch.table] = map[string]struct{}{}
			}
			sets[ch.table][ch.key] = struct{}{}
		}
		for id := range numTables {
			if sets[id] == nil {
				continue
			}
			tc := TableChanges{Table: tableNames[id]}
			for _, k := range slices.Sorted(maps.Keys(sets[id])) {
				if s.st.has(id, k) {
					tc.Put = append(tc.Put, externalKey(id, k))
				} else {
					tc.Deleted = append(tc.Deleted, externalKey(id, k))
				}
			}
			c.Tables = append(c.Tables, tc)
		}
		return c
	}
	return s.scanChanges(c)
}

// scanChanges answers from the records' modify indexes and the tombstones.
func (s *Store) scanChanges(c Changes) Changes {
	st, since := s.st, c.Since
	c.Reset = since < st.tombFloor
	var put [numTables][]string
	scan := func(id tableID, keys func(yield func(string, uint64) bool)) {
		for k, idx := range keys {
			if idx > since {
				put[id] = append(put[id], externalKey(id, k))
			}
		}
	}
	scan(tServers, modIndexes(st.servers.m))
	scan(tCAs, modIndexes(st.cas.m))
	scan(tIssuers, modIndexes(st.issuers.m))
	scan(tTokens, modIndexes(st.tokens.m))
	scan(tRevs, func(yield func(string, uint64) bool) {
		for k, r := range st.revs.set.all() {
			if !yield(k, r.index) {
				return
			}
		}
	})
	scan(tAnchors, modIndexes(st.anchors.m))
	scan(tNodes, modIndexes(st.nodes.m))
	scan(tIssued, modIndexes(st.issued.m))
	scan(tJWKS, modIndexes(st.jwks.m))
	scan(tRegs, modIndexes(st.regs.m))
	if st.policy.ModifyIndex > since {
		put[tPolicy] = []string{policyKey}
	}
	scan(tRoutes, modIndexes(st.routes.m))
	var deleted [numTables][]string
	for k, idx := range st.tombs.m {
		if idx > since {
			id := tableID(k[0])
			deleted[id] = append(deleted[id], externalKey(id, k[1:]))
		}
	}
	for id := range numTables {
		if len(put[id]) == 0 && len(deleted[id]) == 0 {
			continue
		}
		slices.Sort(put[id])
		slices.Sort(deleted[id])
		c.Tables = append(c.Tables, TableChanges{Table: tableNames[id], Put: put[id], Deleted: deleted[id]})
	}
	return c
}

func modIndexes[V any, P interface {
	*V
	record
}](m map[string]V) func(yield func(string, uint64) bool) {
	return func(yield func(string, uint64) bool) {
		for k, v := range m {
			if !yield(k, P(&v).meta().ModifyIndex) {
				return
			}
		}
	}
}
