package fsm

import (
	"maps"
	"sync/atomic"
)

// Table names a kind of record, as reported by Changes.
type Table string

// Tables, in the order Changes reports them.
const (
	TableServers       Table = "servers"
	TableCAs           Table = "cas"
	TableIssuers       Table = "issuers"
	TableJoinTokens    Table = "join_tokens"
	TableRevocations   Table = "revocations"
	TableTrustAnchors  Table = "trust_anchors"
	TableNodes         Table = "nodes"
	TableIssued        Table = "issued"
	TableJWKS          Table = "jwks"
	TableRegistrations Table = "registrations"
	TablePolicy        Table = "policy"
	TableRouteAuths    Table = "route_auths"
)

// tableID is a Table's number inside the store and the snapshot format.
type tableID uint8

const (
	tServers tableID = iota
	tCAs
	tIssuers
	tTokens
	tRevs
	tAnchors
	tNodes
	tIssued
	tJWKS
	tRegs
	tPolicy
	tRoutes
	numTables
)

var tableNames = [numTables]Table{
	tServers: TableServers, tCAs: TableCAs, tIssuers: TableIssuers, tTokens: TableJoinTokens,
	tRevs: TableRevocations, tAnchors: TableTrustAnchors, tNodes: TableNodes, tIssued: TableIssued,
	tJWKS: TableJWKS, tRegs: TableRegistrations, tPolicy: TablePolicy, tRoutes: TableRouteAuths,
}

// tableIDOf is the id of table t; false if t names none.
func tableIDOf(t Table) (tableID, bool) {
	for id, name := range tableNames {
		if name == t {
			return tableID(id), true
		}
	}
	return 0, false
}

// policyKey is the one key of the policy table.
const policyKey = "policy"

// table is a copy-on-write map. A Snapshot shares the map and counts itself
// in refs; the first write after that clones the map, so the snapshot keeps
// its point-in-time view. Values are never modified in place (records are
// replaced whole and their slices are never appended to).
type table[V any] struct {
	m    map[string]V
	refs *atomic.Int32
}

func newTable[V any](hint int) table[V] {
	return table[V]{m: make(map[string]V, hint), refs: new(atomic.Int32)}
}

// mut returns the map for writing, cloning it first if a snapshot shares it.
func (t *table[V]) mut() map[string]V {
	if t.refs.Load() > 0 {
		t.m = maps.Clone(t.m)
		t.refs = new(atomic.Int32)
	}
	return t.m
}

// revRec is a revocation as stored: compact, because there may be millions.
// The map key is the kind's letter followed by the id; times are unix
// nanoseconds (0 = zero time). A revocation never changes after it is
// recorded, so one index serves as both create and modify index.
type revRec struct {
	reason     string
	time       int64
	pruneAfter int64
	index      uint64
}

func revKindByte(k RevocationKind) byte {
	switch k {
	case RevocationCert:
		return 'c'
	case RevocationKey:
		return 'k'
	case RevocationNode:
		return 'n'
	case RevocationToken:
		return 't'
	}
	return 0
}

func revKindOf(b byte) (RevocationKind, bool) {
	switch b {
	case 'c':
		return RevocationCert, true
	case 'k':
		return RevocationKey, true
	case 'n':
		return RevocationNode, true
	case 't':
		return RevocationToken, true
	}
	return "", false
}

func revKey(k RevocationKind, id string) string {
	b := revKindByte(k)
	if b == 0 {
		return ""
	}
	return string(b) + id
}

// state is everything that is replicated: what Snapshot writes and Hash
// covers. The Store's index is kept apart so that a rejected command leaves
// the hash unchanged.
type state struct {
	network string // of the Genesis
	policy  Policy

	servers table[Server]
	cas     table[CA]
	issuers table[Issuer]
	tokens  table[JoinToken]
	revs    revTable
	anchors table[TrustAnchor]
	nodes   table[Node]
	issued  table[Issued]
	jwks    table[JWK]
	regs    table[Registration]
	routes  table[RouteAuth]

	// tombs maps the table id byte followed by the key of a deleted record
	// to the index that deleted it. A put of the key removes its tombstone.
	tombs table[uint64]
	// tombFloor: tombstones of deletions at or below this index may have
	// been dropped.
	tombFloor uint64
}

func newState() *state {
	return &state{
		servers: newTable[Server](0),
		cas:     newTable[CA](0),
		issuers: newTable[Issuer](0),
		tokens:  newTable[JoinToken](0),
		revs:    newRevTable(0),
		anchors: newTable[TrustAnchor](0),
		nodes:   newTable[Node](0),
		issued:  newTable[Issued](0),
		jwks:    newTable[JWK](0),
		regs:    newTable[Registration](0),
		routes:  newTable[RouteAuth](0),
		tombs:   newTable[uint64](0),
	}
}

// refs lists the share counters of all tables, for Snapshot and Release.
func (st *state) refs() []*atomic.Int32 {
	return []*atomic.Int32{
		st.servers.refs, st.cas.refs, st.issuers.refs, st.tokens.refs, st.revs.refs,
		st.anchors.refs, st.nodes.refs, st.issued.refs, st.jwks.refs, st.regs.refs,
		st.routes.refs, st.tombs.refs,
	}
}

// has reports whether key exists in table id.
func (st *state) has(id tableID, key string) bool {
	var ok bool
	switch id {
	case tServers:
		_, ok = st.servers.m[key]
	case tCAs:
		_, ok = st.cas.m[key]
	case tIssuers:
		_, ok = st.issuers.m[key]
	case tTokens:
		_, ok = st.tokens.m[key]
	case tRevs:
		ok = st.revs.set.has(key)
	case tAnchors:
		_, ok = st.anchors.m[key]
	case tNodes:
		_, ok = st.nodes.m[key]
	case tIssued:
		_, ok = st.issued.m[key]
	case tJWKS:
		_, ok = st.jwks.m[key]
	case tRegs:
		_, ok = st.regs.m[key]
	case tPolicy:
		ok = key == policyKey && st.policy.ModifyIndex > 0
	case tRoutes:
		_, ok = st.routes.m[key]
	}
	return ok
}

// externalKey turns a stored key into the key Changes reports: revocations
// become "kind:id"; issued certificates are "issuer/serial" already.
func externalKey(id tableID, key string) string {
	if id == tRevs && key != "" {
		if k, ok := revKindOf(key[0]); ok {
			return string(k) + ":" + key[1:]
		}
	}
	return key
}

func issuedKey(issuer, serial string) string { return issuer + "/" + serial }

func tombKey(id tableID, key string) string { return string([]byte{byte(id)}) + key }

// interner lets values that repeat a lot (revocation reasons) share one
// string. It keeps at most internLimit short strings; others are stored as
// they come. It only saves memory: values are the same either way.
type interner struct{ m map[string]string }

const (
	internLimit  = 1024
	internMaxLen = 64
)

func newInterner() *interner { return &interner{m: map[string]string{}} }

func (in *interner) str(s string) string {
	if v, ok := in.m[s]; ok {
		return v
	}
	if len(s) <= internMaxLen && len(in.m) < internLimit {
		in.m[s] = s
	}
	return s
}

func (in *interner) bytes(b []byte) string {
	if v, ok := in.m[string(b)]; ok {
		return v
	}
	return in.str(string(b))
}
