package fsm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Snapshot format (version 6): a compact binary encoding written by hand,
// not JSON, for three reasons:
//
//   - speed: for 100,000 revocations (6.9 MB) it writes in about 65-110 ms
//     and restores in about 50-90 ms on the shared 2-core test machine, where
//     encoding/json takes about 5 times as long each way (the benchmarks
//     BenchmarkSnapshot100k and BenchmarkRestore100k report both);
//   - canonical by construction: tables in a fixed order, records sorted by
//     key (keyOrder), times as seconds and nanoseconds in UTC, no maps or
//     floats, so equal states give equal bytes;
//   - stable: it cannot change under us with a library upgrade, which would
//     break invariant 6 between replicas of mixed versions.
//
// Layout:
//
//	header  "KMFSM" 0x01 uvarint(index)
//	body    network, policy, the tables in tableID order (each a uvarint
//	        count then its records in key order), the tombstone floor and
//	        the tombstones sorted by (index, key)
//	trailer sha256(header || sha256(body)), 32 bytes
//
// Integers are (u)varints, strings and byte strings are uvarint length then
// bytes, lists are uvarint count then items. The state hash (Store.Hash) is
// the hex of sha256(body): it covers every record with its indexes and the
// tombstones, not the last applied index. Restore checks the trailer (so any
// flipped or missing byte is caught) and that keys are strictly increasing.
// A later format bumps the version byte; Restore must keep reading the old
// ones. Version 2 added a join token's and a node's DNS names and a
// registration's source address (each a list or string after the record's
// last field but its indexes); Restore reads version 1 with them empty.
// Version 3 added a CA record's gossip keyring (a count, then id, sealed
// key, state, since and the index it was made after for each, before its
// indexes); a state without one is
// written as version 2, byte for byte as before (state.format).
// Version 4 added a trust anchor's endpoints and federated keys (a list of
// strings, then a count and kid, node and key for each, before its
// indexes); a state without them is written as version 3 or 2.
// Version 5 added AS numbers: a CA record's (a uvarint after its gossip
// keyring, before its indexes) and a route authorization's (a uvarint
// after its max length, before its indexes); a state in which every one
// is 0 is written as version 4, 3 or 2.
// Version 6 added a trust anchor's exclusive membership (a boolean after
// its federated keys, before its indexes; set on the own network's anchor
// only); a state in which no anchor is exclusive is written as version 5,
// 4, 3 or 2.
const (
	snapshotMagic   = "KMFSM"
	snapshotVersion = 6

	maxSnapshotField = 4 << 20 // one string or byte string
	maxSnapshotList  = 1 << 12 // items in a list inside a record
	maxMapHint       = 1 << 20
)

// Snapshot is a point-in-time capture of the state. Taking it costs no
// copying: it shares the tables with the store, and the store copies a
// table on its first write after the capture (the cost is paid once per
// table and snapshot). Call Release when done so the store can stop
// copying.
type Snapshot struct {
	mu       sync.Mutex // held by WriteTo; Release waits for it
	st       state
	index    uint64
	refs     []*atomic.Int32
	released bool
}

// Snapshot captures the current state. It may run concurrently with Apply.
func (s *Store) Snapshot() (*Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn := &Snapshot{st: *s.st, index: s.index.Load()}
	sn.refs = sn.st.refs()
	for _, r := range sn.refs {
		r.Add(1)
	}
	return sn, nil
}

// Index returns the last applied index the snapshot captured.
func (sn *Snapshot) Index() uint64 { return sn.index }

// WriteTo writes the snapshot to w. It may be called more than once and
// concurrently with Apply on the store.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.released {
		return 0, ErrReleased
	}
	v := sn.st.format()
	e := &encoder{w: w, buf: make([]byte, 0, 64<<10), version: v}
	header := snapshotHeaderV(v, sn.index)
	e.buf = append(e.buf, header...)
	e.flush()
	e.h = sha256.New()
	sn.st.encodeBody(e)
	e.flush()
	sum := e.h.Sum(nil)
	e.h = nil
	e.buf = append(e.buf, snapshotTrailer(header, sum)...)
	e.flush()
	return e.n, e.err
}

// format is the version a snapshot of st is written in: the oldest that
// holds everything in it (6 with an exclusive anchor, 5 with an AS
// number, 4 with a federated anchor's endpoints or keys, 3 with a gossip
// keyring, 2 without any), so that a state that uses nothing new writes,
// and hashes, as before.
func (st *state) format() byte {
	for _, a := range st.anchors.m {
		if a.Exclusive {
			return 6
		}
	}
	for _, c := range st.cas.m {
		if c.ASN != 0 {
			return 5
		}
	}
	for _, r := range st.routes.m {
		if r.ASN != 0 {
			return 5
		}
	}
	for _, a := range st.anchors.m {
		if len(a.Endpoints) > 0 || len(a.Keys) > 0 {
			return 4
		}
	}
	for _, c := range st.cas.m {
		if len(c.GossipKeys) > 0 {
			return 3
		}
	}
	return 2
}

func snapshotHeaderV(version byte, index uint64) []byte {
	h := append([]byte(snapshotMagic), version)
	return binary.AppendUvarint(h, index)
}

// snapshotTrailer checks the header and, through the state hash, the body.
func snapshotTrailer(header, bodySum []byte) []byte {
	h := sha256.New()
	h.Write(header)
	h.Write(bodySum)
	return h.Sum(nil)
}

// Release tells the store the snapshot is no longer needed. WriteTo fails
// with ErrReleased afterwards.
func (sn *Snapshot) Release() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.released {
		return
	}
	sn.released = true
	for _, r := range sn.refs {
		r.Add(-1)
	}
	sn.st = state{}
}

// Hash returns the hex SHA-256 of the canonical encoding of the state (the
// snapshot body). Replicas that applied the same log have the same hash; a
// rejected or ignored command does not change it. It encodes the whole
// state (about as long as writing a snapshot) and is cached until the next
// change.
func (s *Store) Hash() string {
	if h := s.hash.Load(); h != nil {
		return *h
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.hash.Load(); h != nil {
		return *h
	}
	e := &encoder{h: sha256.New(), buf: make([]byte, 0, 64<<10), version: s.st.format()}
	s.st.encodeBody(e)
	e.flush()
	h := hex.EncodeToString(e.h.Sum(nil))
	s.hash.Store(&h)
	return h
}

// Restore replaces the state with the snapshot read from r (as written by
// Snapshot.WriteTo), including the last applied index. The new state is
// built aside and swapped in only when the whole snapshot has been read and
// its checksum matches; on error the old state stays and the error wraps
// ErrSnapshot (or is the reader's error).
func (s *Store) Restore(r io.Reader) error {
	d := &decoder{r: r, buf: make([]byte, 64<<10), intern: newInterner()}
	magic := d.take(len(snapshotMagic) + 1)
	if d.err != nil {
		return d.fail("header")
	}
	if string(magic[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a keymesh state snapshot", ErrSnapshot)
	}
	d.version = magic[len(snapshotMagic)]
	if d.version < 1 || d.version > snapshotVersion {
		return fmt.Errorf("%w: format version %d, this replica reads 1 to %d", ErrSnapshot, d.version, snapshotVersion)
	}
	index := d.uvarint()
	d.startHash()
	st := decodeBody(d)
	if d.err != nil {
		return d.fail("body")
	}
	sum := d.stopHash()
	trailer := d.take(sha256.Size)
	if d.err != nil {
		return d.fail("trailer")
	}
	if !bytes.Equal(snapshotTrailer(snapshotHeaderV(d.version, index), sum), trailer) {
		return fmt.Errorf("%w: checksum mismatch", ErrSnapshot)
	}
	if !d.atEOF() {
		if d.err != nil {
			return d.fail("end")
		}
		return fmt.Errorf("%w: data after the trailer", ErrSnapshot)
	}
	h := hex.EncodeToString(sum)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	s.index.Store(index)
	s.rebuildDerived(index)
	if d.version == st.format() {
		s.hash.Store(&h)
	} else {
		s.hash.Store(nil) // the hash covers the body as this state is written
	}
	close(s.notify)
	s.notify = make(chan struct{})
	return nil
}

// ---- encoding ----

type encoder struct {
	buf []byte
	w   io.Writer // nil: hash only
	h   hash.Hash // nil: not hashing
	n   int64
	err error
	// version is the format written (what the body holds).
	version byte
}

func (e *encoder) flush() {
	if len(e.buf) == 0 {
		return
	}
	if e.h != nil {
		e.h.Write(e.buf)
	}
	if e.w != nil && e.err == nil {
		n, err := e.w.Write(e.buf)
		e.n += int64(n)
		e.err = err
	}
	e.buf = e.buf[:0]
}

func (e *encoder) maybeFlush() {
	if len(e.buf) >= 60<<10 {
		e.flush()
	}
}

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }

func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) bytes(b []byte) {
	e.uvarint(uint64(len(b)))
	e.buf = append(e.buf, b...)
	if len(b) > 16<<10 {
		e.flush()
	}
}

func (e *encoder) list(l [][]byte) {
	e.uvarint(uint64(len(l)))
	for _, b := range l {
		e.bytes(b)
	}
}

func (e *encoder) strs(l []string) {
	e.uvarint(uint64(len(l)))
	for _, s := range l {
		e.str(s)
	}
}

func (e *encoder) time(t time.Time) {
	e.varint(t.Unix())
	e.uvarint(uint64(t.Nanosecond()))
}

func (e *encoder) boolean(b bool) {
	if b {
		e.buf = append(e.buf, 1)
	} else {
		e.buf = append(e.buf, 0)
	}
}

func (e *encoder) indexes(i Indexes) {
	e.uvarint(i.CreateIndex)
	e.uvarint(i.ModifyIndex)
}

// encodeTable writes the records of m sorted by key.
func encodeTable[V any](e *encoder, m map[string]V, enc func(*encoder, string, *V)) {
	keys := make([]string, 0, len(m))
	vals := make([]V, 0, len(m))
	for k, v := range m {
		keys = append(keys, k)
		vals = append(vals, v)
	}
	encodeEntries(e, keys, vals, enc)
}

// encodeEntries is encodeTable of keys and their values vals.
func encodeEntries[V any](e *encoder, keys []string, vals []V, enc func(*encoder, string, *V)) {
	e.uvarint(uint64(len(keys)))
	for _, i := range keyOrder(keys) {
		enc(e, keys[i], &vals[i])
		e.maybeFlush()
	}
}

func (st *state) encodeBody(e *encoder) {
	e.str(st.network)
	e.str(st.policy.Text)
	e.uvarint(st.policy.Version)
	e.indexes(st.policy.Indexes)
	encodeTable(e, st.servers.m, func(e *encoder, _ string, v *Server) {
		e.str(v.Name)
		e.str(v.RaftAddr)
		e.str(v.APIAddr)
		e.str(v.Status)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.cas.m, func(e *encoder, _ string, v *CA) {
		e.str(v.Network)
		e.bytes(v.Active)
		e.list(v.Prepared)
		e.list(v.Retired)
		e.bytes(v.SealedKey)
		e.list(v.CrossSigns)
		if e.version >= 3 {
			e.uvarint(uint64(len(v.GossipKeys)))
			for _, k := range v.GossipKeys {
				e.str(k.ID)
				e.bytes(k.Sealed)
				e.str(k.State)
				e.time(k.Since)
				e.uvarint(k.After)
			}
		}
		if e.version >= 5 {
			e.uvarint(uint64(v.ASN))
		}
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.issuers.m, func(e *encoder, _ string, v *Issuer) {
		e.str(v.ID)
		e.str(v.Network)
		e.bytes(v.Cert)
		e.str(v.Status)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.tokens.m, func(e *encoder, _ string, v *JoinToken) {
		e.str(v.ID)
		e.str(v.Hash)
		e.str(v.Kind)
		e.str(v.Principal)
		e.str(v.NodeID)
		e.varint(int64(v.Uses))
		e.varint(int64(v.Used))
		e.time(v.Expiry)
		e.boolean(v.Revoked)
		e.str(v.Description)
		e.strs(v.DNSNames)
		e.indexes(v.Indexes)
	})
	revKeys, revRecs := st.revs.set.collect(nil)
	encodeEntries(e, revKeys, revRecs, func(e *encoder, k string, v *revRec) {
		e.str(k)
		e.str(v.reason)
		e.varint(v.time)
		e.varint(v.pruneAfter)
		e.uvarint(v.index)
	})
	encodeTable(e, st.anchors.m, func(e *encoder, _ string, v *TrustAnchor) {
		e.str(v.Network)
		e.list(v.Roots)
		e.strs(v.Accept)
		if e.version >= 4 {
			e.strs(v.Endpoints)
			e.uvarint(uint64(len(v.Keys)))
			for _, k := range v.Keys {
				e.str(k.KID)
				e.str(k.Node)
				e.bytes(k.Key)
			}
		}
		if e.version >= 6 {
			e.boolean(v.Exclusive)
		}
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.nodes.m, func(e *encoder, _ string, v *Node) {
		e.str(v.ID)
		e.str(v.Network)
		e.str(v.Principal)
		e.str(v.Status)
		e.str(v.CertSerial)
		e.str(v.PrevSerial)
		e.time(v.CertExpiry)
		e.strs(v.DNSNames)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.issued.m, func(e *encoder, _ string, v *Issued) {
		e.str(v.Issuer)
		e.str(v.Serial)
		e.str(v.NodeID)
		e.time(v.NotAfter)
		e.bytes(v.Cert)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.jwks.m, func(e *encoder, _ string, v *JWK) {
		e.str(v.KID)
		e.bytes(v.Key)
		e.str(v.Node)
		e.str(v.State)
		e.time(v.NotAfter)
		e.time(v.RetiringSince)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.regs.m, func(e *encoder, _ string, v *Registration) {
		e.str(v.ID)
		e.str(v.NodeID)
		e.str(v.Network)
		e.str(v.Principal)
		e.bytes(v.CSR)
		e.strs(v.DNSNames)
		e.str(v.Status)
		e.str(v.Reason)
		e.str(v.Serial)
		e.str(v.Issuer)
		e.time(v.Created)
		e.str(v.Source)
		e.indexes(v.Indexes)
	})
	encodeTable(e, st.routes.m, func(e *encoder, _ string, v *RouteAuth) {
		e.str(v.Prefix)
		e.strs(v.Origins)
		e.varint(int64(v.MaxLength))
		if e.version >= 5 {
			e.uvarint(uint64(v.ASN))
		}
		e.indexes(v.Indexes)
	})
	e.uvarint(st.tombFloor)
	keys := make([]string, 0, len(st.tombs.m))
	for k := range st.tombs.m {
		keys = append(keys, k)
	}
	order := keyOrder(keys)
	slices.SortStableFunc(order, func(a, b int32) int { return cmp.Compare(st.tombs.m[keys[a]], st.tombs.m[keys[b]]) })
	e.uvarint(uint64(len(keys)))
	for _, i := range order {
		e.uvarint(st.tombs.m[keys[i]])
		e.str(keys[i])
		e.maybeFlush()
	}
}

// ---- decoding ----

type decoder struct {
	r        io.Reader
	buf      []byte
	pos, end int
	h        hash.Hash // hashes consumed bytes from hashFrom while set
	hashFrom int
	err      error
	intern   *interner
	version  byte // of the snapshot being read
}

// v2 reads a string list that version 2 added; nil in version 1.
func (d *decoder) v2strs() []string {
	if d.version < 2 {
		return nil
	}
	return d.strs()
}

// v3gossipKeys reads the gossip keyring of a CA record, which version 3
// added; nil before.
func (d *decoder) v3gossipKeys() []GossipKey {
	if d.version < 3 {
		return nil
	}
	n := d.length(MaxGossipKeys)
	var keys []GossipKey
	for i := 0; i < n && d.err == nil; i++ {
		keys = append(keys, GossipKey{ID: d.str(), Sealed: d.bytes(), State: d.str(), Since: d.time(), After: d.uvarint()})
	}
	return keys
}

// v4federation reads a trust anchor's endpoints and federated keys, which
// version 4 added; nil before.
func (d *decoder) v4federation() ([]string, []FederatedKey) {
	if d.version < 4 {
		return nil, nil
	}
	endpoints := d.strs()
	n := d.length(MaxFederatedKeys)
	var keys []FederatedKey
	for i := 0; i < n && d.err == nil; i++ {
		keys = append(keys, FederatedKey{KID: d.str(), Node: d.str(), Key: d.bytes()})
	}
	return endpoints, keys
}

// v5asn reads an AS number, which version 5 added; 0 before.
func (d *decoder) v5asn() uint32 {
	if d.version < 5 {
		return 0
	}
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.corrupt("AS number %d", v)
		return 0
	}
	return uint32(v)
}

// v6exclusive reads a trust anchor's exclusive membership, which version
// 6 added; false before. Only the own network's anchor may hold it, as
// Apply keeps it.
func (d *decoder) v6exclusive(network, own string) bool {
	if d.version < 6 {
		return false
	}
	ex := d.boolean()
	if ex && network != own {
		d.corrupt("the anchor of federated network %q is exclusive", network)
		return false
	}
	return ex
}

// v2str reads a string that version 2 added; "" in version 1.
func (d *decoder) v2str() string {
	if d.version < 2 {
		return ""
	}
	return d.str()
}

// fail reports where decoding stopped: a corrupt or truncated snapshot
// wraps ErrSnapshot, a reader error is passed on.
func (d *decoder) fail(where string) error {
	if d.err == nil || errors.Is(d.err, errCorrupt) || errors.Is(d.err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: %v", ErrSnapshot, where, d.err)
	}
	return fmt.Errorf("fsm: restore: %s: %w", where, d.err)
}

var errCorrupt = errors.New("corrupt")

func (d *decoder) corrupt(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
	}
}

// fill makes at least n bytes available at pos.
func (d *decoder) fill(n int) bool {
	if d.end-d.pos >= n {
		return true
	}
	if d.err != nil {
		return false
	}
	if d.h != nil {
		d.h.Write(d.buf[d.hashFrom:d.pos])
		d.hashFrom = 0
	}
	copy(d.buf, d.buf[d.pos:d.end])
	d.end -= d.pos
	d.pos = 0
	if n > len(d.buf) {
		nb := make([]byte, max(n, 2*len(d.buf)))
		copy(nb, d.buf[:d.end])
		d.buf = nb
	}
	for d.end < n {
		m, err := d.r.Read(d.buf[d.end:])
		d.end += m
		if err != nil {
			if d.end >= n {
				break
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			d.err = err
			return false
		}
	}
	return true
}

// atEOF reports whether the input has ended after pos.
func (d *decoder) atEOF() bool {
	if d.err != nil || d.end > d.pos {
		return false
	}
	var one [1]byte
	for {
		m, err := d.r.Read(one[:])
		if m > 0 {
			return false
		}
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			d.err = err
			return false
		}
	}
}

func (d *decoder) startHash() {
	d.h = sha256.New()
	d.hashFrom = d.pos
}

func (d *decoder) stopHash() []byte {
	d.h.Write(d.buf[d.hashFrom:d.pos])
	sum := d.h.Sum(nil)
	d.h = nil
	return sum
}

func (d *decoder) take(n int) []byte {
	if !d.fill(n) {
		return nil
	}
	b := d.buf[d.pos : d.pos+n]
	d.pos += n
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	if d.end-d.pos < binary.MaxVarintLen64 && !d.fill(binary.MaxVarintLen64) {
		// A short tail is fine for a short varint; Uvarint below tells.
		if !errors.Is(d.err, io.ErrUnexpectedEOF) {
			return 0
		}
		d.err = nil
		if d.end == d.pos {
			d.err = io.ErrUnexpectedEOF
			return 0
		}
	}
	v, n := binary.Uvarint(d.buf[d.pos:d.end])
	if n <= 0 {
		if n == 0 {
			d.err = io.ErrUnexpectedEOF
		} else {
			d.corrupt("varint overflow")
		}
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) length(limit int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.corrupt("length %d over limit %d", n, limit)
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.length(maxSnapshotField)
	if n == 0 {
		return ""
	}
	b := d.take(n)
	if b == nil {
		return ""
	}
	return string(b)
}

// internStr is str for values that repeat a lot (revocation reasons).
func (d *decoder) internStr() string {
	n := d.length(maxSnapshotField)
	if n == 0 {
		return ""
	}
	b := d.take(n)
	if b == nil {
		return ""
	}
	return d.intern.bytes(b)
}

func (d *decoder) bytes() []byte {
	n := d.length(maxSnapshotField)
	if n == 0 {
		return nil
	}
	b := d.take(n)
	if b == nil {
		return nil
	}
	return slices.Clone(b)
}

func (d *decoder) list() [][]byte {
	n := d.length(maxSnapshotList)
	if n == 0 {
		return nil
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.bytes())
	}
	return out
}

func (d *decoder) strs() []string {
	n := d.length(maxSnapshotList)
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.str())
	}
	return out
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 {
		d.corrupt("nanoseconds %d", nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) boolean() bool {
	b := d.take(1)
	if b == nil {
		return false
	}
	if b[0] > 1 {
		d.corrupt("bool %d", b[0])
	}
	return b[0] == 1
}

func (d *decoder) indexes() Indexes {
	return Indexes{CreateIndex: d.uvarint(), ModifyIndex: d.uvarint()}
}

// decodeTable reads a table written by encodeTable; key computes a record's
// key, which must be strictly increasing.
func decodeTable[V any](d *decoder, dec func(*decoder) (string, V)) table[V] {
	n := d.uvarint()
	t := newTable[V](int(min(n, maxMapHint)))
	decodeEntries(d, n, dec, func(k string, v V) { t.m[k] = v })
	return t
}

// decodeEntries decodes n entries in key order and puts each.
func decodeEntries[V any](d *decoder, n uint64, dec func(*decoder) (string, V), put func(string, V)) {
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		k, v := dec(d)
		if d.err != nil {
			break
		}
		if i > 0 && k <= prev {
			d.corrupt("keys out of order at %q", k)
			break
		}
		put(k, v)
		prev = k
	}
}

func decodeBody(d *decoder) *state {
	st := &state{}
	st.network = d.str()
	st.policy.Text = d.str()
	st.policy.Version = d.uvarint()
	st.policy.Indexes = d.indexes()
	st.servers = decodeTable(d, func(d *decoder) (string, Server) {
		v := Server{Name: d.str(), RaftAddr: d.str(), APIAddr: d.str(), Status: d.str(), Indexes: d.indexes()}
		return v.Name, v
	})
	st.cas = decodeTable(d, func(d *decoder) (string, CA) {
		v := CA{Network: d.str(), Active: d.bytes(), Prepared: d.list(), Retired: d.list(), SealedKey: d.bytes(), CrossSigns: d.list()}
		v.GossipKeys = d.v3gossipKeys()
		v.ASN = d.v5asn()
		v.Indexes = d.indexes()
		return v.Network, v
	})
	st.issuers = decodeTable(d, func(d *decoder) (string, Issuer) {
		v := Issuer{ID: d.str(), Network: d.str(), Cert: d.bytes(), Status: d.str(), Indexes: d.indexes()}
		return v.ID, v
	})
	st.tokens = decodeTable(d, func(d *decoder) (string, JoinToken) {
		v := JoinToken{ID: d.str(), Hash: d.str(), Kind: d.str(), Principal: d.str(), NodeID: d.str(),
			Uses: int(d.varint()), Used: int(d.varint()), Expiry: d.time(), Revoked: d.boolean(),
			Description: d.str(), DNSNames: d.v2strs(), Indexes: d.indexes()}
		return v.Hash, v
	})
	nrevs := d.uvarint()
	st.revs = newRevTable(int(min(nrevs, maxMapHint)))
	decodeEntries(d, nrevs, func(d *decoder) (string, revRec) {
		k := d.str()
		if _, ok := revKindOf(firstByte(k)); !ok && d.err == nil {
			d.corrupt("revocation key %q has no kind", k)
		}
		if len(k) > maxRevKeyLen && d.err == nil {
			d.corrupt("revocation key of %d bytes, limit %d", len(k), maxRevKeyLen)
		}
		return k, revRec{reason: d.internStr(), time: d.varint(), pruneAfter: d.varint(), index: d.uvarint()}
	}, st.revs.set.add)
	st.anchors = decodeTable(d, func(d *decoder) (string, TrustAnchor) {
		v := TrustAnchor{Network: d.str(), Roots: d.list(), Accept: d.strs()}
		v.Endpoints, v.Keys = d.v4federation()
		v.Exclusive = d.v6exclusive(v.Network, st.network)
		v.Indexes = d.indexes()
		return v.Network, v
	})
	st.nodes = decodeTable(d, func(d *decoder) (string, Node) {
		v := Node{ID: d.str(), Network: d.str(), Principal: d.str(), Status: d.str(), CertSerial: d.str(),
			PrevSerial: d.str(), CertExpiry: d.time(), DNSNames: d.v2strs(), Indexes: d.indexes()}
		return v.ID, v
	})
	st.issued = decodeTable(d, func(d *decoder) (string, Issued) {
		v := Issued{Issuer: d.str(), Serial: d.str(), NodeID: d.str(), NotAfter: d.time(), Cert: d.bytes(), Indexes: d.indexes()}
		return issuedKey(v.Issuer, v.Serial), v
	})
	st.jwks = decodeTable(d, func(d *decoder) (string, JWK) {
		v := JWK{KID: d.str(), Key: d.bytes(), Node: d.str(), State: d.str(), NotAfter: d.time(), RetiringSince: d.time(), Indexes: d.indexes()}
		return v.KID, v
	})
	st.regs = decodeTable(d, func(d *decoder) (string, Registration) {
		v := Registration{ID: d.str(), NodeID: d.str(), Network: d.str(), Principal: d.str(), CSR: d.bytes(),
			DNSNames: d.strs(), Status: d.str(), Reason: d.str(), Serial: d.str(), Issuer: d.str(), Created: d.time(),
			Source: d.v2str(), Indexes: d.indexes()}
		return v.ID, v
	})
	st.routes = decodeTable(d, func(d *decoder) (string, RouteAuth) {
		v := RouteAuth{Prefix: d.str(), Origins: d.strs(), MaxLength: int(d.varint()), ASN: d.v5asn(), Indexes: d.indexes()}
		return v.Prefix, v
	})
	st.tombFloor = d.uvarint()
	n := d.uvarint()
	st.tombs = newTable[uint64](int(min(n, maxMapHint)))
	var prevIdx uint64
	prevKey := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		idx, k := d.uvarint(), d.str()
		if d.err != nil {
			break
		}
		if len(k) == 0 || tableID(k[0]) >= numTables || tableID(k[0]) == tPolicy {
			d.corrupt("tombstone %q names no table", k)
			break
		}
		if i > 0 && (idx < prevIdx || (idx == prevIdx && k <= prevKey)) {
			d.corrupt("tombstones out of order at %q", k)
			break
		}
		st.tombs.m[k] = idx
		prevIdx, prevKey = idx, k
	}
	return st
}

func firstByte(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}
