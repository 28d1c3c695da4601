package fsm

import (
	"encoding/base64"
	"encoding/binary"
	"hash/maphash"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
)

// Revocations are the one table that grows to millions of records, and
// every token, handshake and route check looks one up. A Go map of strings
// costs about 180 bytes a record (slot, key header, key bytes, load factor);
// revSet keeps them at about 80:
//
//   - recs is one append-only array of records, each 8-byte aligned: two
//     times, the index, a reason code and the key, stored packed (a serial
//     or another lowercase hex id as its bytes, a base64url id, as this
//     project makes jtis and kids, decoded, anything else as it is);
//   - slots is an open-addressing hash table (linear probing, backward-shift
//     deletion) of record offsets, each with 32 bits of the key's hash so
//     that a probe rarely reads a record that is not the one sought.
//
// The key of a revocation is the same string as before (the kind's letter
// followed by the id); the packing is invisible outside this file and the
// snapshot format does not change. The layout depends on a per-process hash
// seed and on the order of writes; nothing replicated depends on it.

// revSeed seeds the slots' hash. It is random per process, so an attacker
// who chooses ids cannot aim them at one probe sequence.
var revSeed = maphash.MakeSeed()

// Key forms: the second byte of a packed key.
const (
	revFormRaw    = 0 // the id's bytes as they are
	revFormHex    = 1 // lowercase hex of even length, decoded
	revFormHexOdd = 2 // lowercase hex of odd length: "0"+id, decoded
	revFormB64    = 3 // canonical unpadded base64url, decoded
)

// revKeyMaxPacked bounds a packed key: kind, form and an id of MaxIDLen.
const revKeyMaxPacked = 2 + MaxIDLen

// maxRevKeyLen bounds a key a snapshot may hold, far above any id Apply
// takes: a record holds its key's length in 15 bits.
const maxRevKeyLen = 4096

// packRevKey appends the packed form of key (kind letter + id) to dst.
// It is injective: unpackRevKey gives key back.
func packRevKey(dst []byte, key string) []byte {
	if key == "" {
		return dst
	}
	return packRevID(dst, key[0], key[1:])
}

// packRevID is packRevKey of the key of kind letter kind and id.
func packRevID(dst []byte, kind byte, id string) []byte {
	if id != "" {
		form := byte(revFormHex)
		if len(id)%2 == 1 {
			form = revFormHexOdd
		}
		if out, ok := appendHexBytes(append(dst, kind, form), id); ok {
			return out
		}
		if out, ok := appendB64Bytes(append(dst, kind, revFormB64), id); ok {
			return out
		}
	}
	dst = append(dst, kind, revFormRaw)
	return append(dst, id...)
}

// Character classes of ids: lowercase hex digits, base64url digits.
const (
	classHex = 1 << iota
	classB64
)

var (
	revClass [256]uint8
	revHex   [256]uint8 // a hex digit's value
	revB64   [256]uint8 // a base64url digit's value
)

func init() {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(b64); i++ {
		revClass[b64[i]] |= classB64
		revB64[b64[i]] = uint8(i)
	}
	const hex = "0123456789abcdef"
	for i := 0; i < len(hex); i++ {
		revClass[hex[i]] |= classHex
		revHex[hex[i]] = uint8(i)
	}
}

// grow extends dst by n bytes and returns it and the new bytes.
func grow(dst []byte, n int) ([]byte, []byte) {
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	return dst, dst[start:]
}

// appendHexBytes appends the bytes of s if it is lowercase hex; of an odd
// length, a leading zero nibble is implied. On false dst is garbage.
func appendHexBytes(dst []byte, s string) ([]byte, bool) {
	dst, out := grow(dst, (len(s)+1)/2)
	i, j := 0, 0
	if len(s)%2 == 1 {
		if revClass[s[0]]&classHex == 0 {
			return dst, false
		}
		out[0] = revHex[s[0]]
		i, j = 1, 1
	}
	for ; i+1 < len(s) && j < len(out); i, j = i+2, j+1 {
		a, b := s[i], s[i+1]
		if revClass[a]&revClass[b]&classHex == 0 {
			return dst, false
		}
		out[j] = revHex[a]<<4 | revHex[b]
	}
	return dst, true
}

// appendB64Bytes appends the bytes of s if it is unpadded base64url and
// encoding them again gives s (so neither a length of 1 mod 4 nor unused
// bits set in the last digit). On false dst is garbage.
func appendB64Bytes(dst []byte, s string) ([]byte, bool) {
	if len(s)%4 == 1 {
		return dst, false
	}
	dst, out := grow(dst, len(s)*3/4)
	i, j := 0, 0
	for ; i+4 <= len(s) && j+3 <= len(out); i, j = i+4, j+3 {
		a, b, c, d := s[i], s[i+1], s[i+2], s[i+3]
		if revClass[a]&revClass[b]&revClass[c]&revClass[d]&classB64 == 0 {
			return dst, false
		}
		v := uint32(revB64[a])<<18 | uint32(revB64[b])<<12 | uint32(revB64[c])<<6 | uint32(revB64[d])
		out[j], out[j+1], out[j+2] = byte(v>>16), byte(v>>8), byte(v)
	}
	switch rest := s[i:]; len(rest) {
	case 2:
		if revClass[rest[0]]&revClass[rest[1]]&classB64 == 0 || j+1 > len(out) {
			return dst, false
		}
		v := uint32(revB64[rest[0]])<<6 | uint32(revB64[rest[1]])
		out[j] = byte(v >> 4)
		return dst, v&0xf == 0
	case 3:
		if revClass[rest[0]]&revClass[rest[1]]&revClass[rest[2]]&classB64 == 0 || j+2 > len(out) {
			return dst, false
		}
		v := uint32(revB64[rest[0]])<<12 | uint32(revB64[rest[1]])<<6 | uint32(revB64[rest[2]])
		out[j], out[j+1] = byte(v>>10), byte(v>>2)
		return dst, v&0x3 == 0
	}
	return dst, true
}

// unpackRevKey is the key that packRevKey packed into p.
func unpackRevKey(p []byte) string {
	var buf [1 + 2*revKeyMaxPacked]byte
	return string(appendUnpacked(buf[:0], p))
}

// appendUnpacked appends the key that packRevKey packed into p to dst.
func appendUnpacked(dst, p []byte) []byte {
	if len(p) < 2 {
		return dst
	}
	kind, form, body := p[0], p[1], p[2:]
	dst = append(dst, kind)
	switch form {
	case revFormHex, revFormHexOdd:
		const digits = "0123456789abcdef"
		start := len(dst)
		for _, b := range body {
			dst = append(dst, digits[b>>4], digits[b&15])
		}
		if form == revFormHexOdd && len(dst) > start {
			dst = append(dst[:start], dst[start+1:]...)
		}
		return dst
	case revFormB64:
		return base64.RawURLEncoding.AppendEncode(dst, body)
	}
	return append(dst, body...)
}

// revHash hashes a key as its kind letter and id, not packed, so that a
// lookup that finds nothing never packs (the id is hashed where it is).
func revHash(kind byte, id string) uint64 {
	return maphash.String(revSeed, id) ^ (uint64(kind)+1)*0x9e3779b97f4a7c15
}

// hashPacked is revHash of the key packed into p.
func hashPacked(p []byte) uint64 {
	var buf [1 + 2*revKeyMaxPacked]byte
	k := appendUnpacked(buf[:0], p)
	return maphash.Bytes(revSeed, k[1:]) ^ (uint64(k[0])+1)*0x9e3779b97f4a7c15
}

// A record in recs, at an offset that is a multiple of 8:
//
//	[0:8]   time, unix nanoseconds (0 = zero time)
//	[8:16]  prune after, same
//	[16:24] index: creates and last modifies it
//	[24:26] reason: an index in reasons, or reasonInline
//	[26:28] length of the packed key; recDead set once deleted
//	[28:]   packed key; an inline reason's uvarint length and bytes; zero
//	        padding to a multiple of 8
const (
	recHead      = 28
	recDead      = 1 << 15
	reasonInline = 1<<16 - 1
	// reasonLimit and reasonMaxLen bound the reasons a set interns; a rare
	// or long reason is stored in its record instead.
	reasonLimit  = 1024
	reasonMaxLen = 64
)

// revSet is the revocations table (see the top of this file). A revSet is
// owned by one state; revTable shares it with snapshots copy-on-write.
type revSet struct {
	recs []byte
	// slots: 0 = empty; else a record's offset/8+1 (low 32 bits) and the
	// low 32 bits of its key's hash (high 32), whose low bits are its home
	// slot.
	slots     []uint64
	reasons   []string // interned reasons; reasons[0] = ""
	reasonIDs map[string]uint16
	live      int // records not dead
	dead      int // bytes of dead records
}

func newRevSet(hint int) *revSet {
	s := &revSet{reasons: []string{""}, reasonIDs: map[string]uint16{"": 0}}
	if hint > 0 {
		s.recs = make([]byte, 0, hint*48)
		s.slots = make([]uint64, slotsFor(hint))
	}
	return s
}

// slotsFor is the power of two of slots that holds n at a load of at most 3/4.
func slotsFor(n int) int {
	c := 8
	for c*3 < n*4 {
		c *= 2
	}
	return c
}

func (s *revSet) len() int { return s.live }

func slotOff(v uint64) int { return int(uint32(v)-1) * 8 }

// keyLen is the packed key length of the record at off and whether it is dead.
func (s *revSet) keyLen(off int) (int, bool) {
	n := binary.LittleEndian.Uint16(s.recs[off+26:])
	return int(n &^ recDead), n&recDead != 0
}

// keyAt is the packed key of the record at off.
func (s *revSet) keyAt(off int) []byte {
	n, _ := s.keyLen(off)
	return s.recs[off+recHead : off+recHead+n]
}

// recLen is the length of the record at off, padding included.
func (s *revSet) recLen(off int) int {
	n, _ := s.keyLen(off)
	end := off + recHead + n
	if binary.LittleEndian.Uint16(s.recs[off+24:]) == reasonInline {
		rn, w := binary.Uvarint(s.recs[end:])
		end += w + int(rn)
	}
	return (end - off + 7) &^ 7
}

// find returns the slot of the key of kind and id, hashed to h, and
// whether it is there; if not, the slot is the empty one where it would go.
// p is the key packed, or nil: find packs it on the first slot whose hash
// matches, so that a miss never packs.
func (s *revSet) find(h uint64, kind byte, id string, p []byte) (int, bool) {
	if len(s.slots) == 0 {
		return -1, false
	}
	var buf [revKeyMaxPacked]byte
	mask := uint64(len(s.slots) - 1)
	tag := h & 0xffffffff
	for i := h & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return int(i), false
		}
		if v>>32 != tag {
			continue
		}
		if p == nil {
			p = packRevID(buf[:0], kind, id)
		}
		if string(s.keyAt(slotOff(v))) == string(p) {
			return int(i), true
		}
	}
}

func (s *revSet) rec(off int) revRec {
	b := s.recs[off:]
	r := revRec{
		time:       int64(binary.LittleEndian.Uint64(b)),
		pruneAfter: int64(binary.LittleEndian.Uint64(b[8:])),
		index:      binary.LittleEndian.Uint64(b[16:]),
	}
	if code := binary.LittleEndian.Uint16(b[24:]); code != reasonInline {
		r.reason = s.reasons[code]
	} else {
		n, _ := s.keyLen(off)
		rest := b[recHead+n:]
		rn, w := binary.Uvarint(rest)
		r.reason = string(rest[w : w+int(rn)])
	}
	return r
}

// get looks up key (kind letter + id).
func (s *revSet) get(key string) (revRec, bool) {
	if key == "" {
		return revRec{}, false
	}
	return s.getID(key[0], key[1:])
}

// getID looks up the key of kind letter kind and id, without allocating.
func (s *revSet) getID(kind byte, id string) (revRec, bool) {
	i, ok := s.find(revHash(kind, id), kind, id, nil)
	if !ok {
		return revRec{}, false
	}
	return s.rec(slotOff(s.slots[i])), true
}

func (s *revSet) has(key string) bool {
	_, ok := s.get(key)
	return ok
}

// add adds key, which must be absent.
func (s *revSet) add(key string, r revRec) {
	if key == "" {
		return
	}
	var buf [revKeyMaxPacked]byte
	s.insert(packRevKey(buf[:0], key), revHash(key[0], key[1:]), r)
}

// insert adds packed key p, hashed to h and known to be absent.
func (s *revSet) insert(p []byte, h uint64, r revRec) {
	if (s.live+1)*4 > len(s.slots)*3 {
		s.resize(slotsFor(s.live + 1))
	}
	i, _ := s.find(h, 0, "", p)
	off := s.store(p, r)
	s.slots[i] = h<<32 | uint64(off/8+1)
	s.live++
}

// store appends the record of p and r to recs and returns its offset.
func (s *revSet) store(p []byte, r revRec) int {
	code, ok := s.reasonIDs[r.reason]
	if !ok && len(r.reason) <= reasonMaxLen && len(s.reasons) < reasonLimit {
		code = uint16(len(s.reasons))
		s.reasons = append(s.reasons, r.reason)
		s.reasonIDs[r.reason] = code
		ok = true
	}
	if !ok {
		code = reasonInline
	}
	off := len(s.recs)
	b := binary.LittleEndian.AppendUint64(s.recs, uint64(r.time))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.pruneAfter))
	b = binary.LittleEndian.AppendUint64(b, r.index)
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(p)))
	b = append(b, p...)
	if code == reasonInline {
		b = binary.AppendUvarint(b, uint64(len(r.reason)))
		b = append(b, r.reason...)
	}
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	s.recs = b
	return off
}

// del removes key; false if it was not there.
func (s *revSet) del(key string) bool {
	if key == "" {
		return false
	}
	i, ok := s.find(revHash(key[0], key[1:]), key[0], key[1:], nil)
	if !ok {
		return false
	}
	off := slotOff(s.slots[i])
	s.dead += s.recLen(off)
	n, _ := s.keyLen(off)
	binary.LittleEndian.PutUint16(s.recs[off+26:], uint16(n)|recDead)
	s.slots[i] = 0
	s.live--
	s.shiftBack(i)
	if s.dead >= 64<<10 && s.dead > len(s.recs)/2 {
		s.compact()
	}
	return true
}

// shiftBack closes the hole at slot i: each following entry of the probe
// run moves back if the hole lies between its home slot and where it is.
func (s *revSet) shiftBack(i int) {
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := int(s.slots[j]>>32) & mask
		// The entry at j may fill hole i unless its home lies in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.slots[i], s.slots[j] = s.slots[j], 0
			i = j
		}
	}
}

// each calls f with the offset of every live record, in the order written.
func (s *revSet) each(f func(off int) bool) {
	for off := 0; off < len(s.recs); off += s.recLen(off) {
		if _, dead := s.keyLen(off); !dead && !f(off) {
			return
		}
	}
}

// resize rebuilds slots with n slots.
func (s *revSet) resize(n int) {
	s.slots = make([]uint64, n)
	mask := uint64(n - 1)
	s.each(func(off int) bool {
		h := hashPacked(s.keyAt(off))
		i := h & mask // home slot; the tag keeps h's low 32 bits, so shiftBack finds it again
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = h<<32 | uint64(off/8+1)
		return true
	})
}

// compact drops dead records.
func (s *revSet) compact() {
	fresh := newRevSet(s.live)
	s.each(func(off int) bool {
		p := s.keyAt(off)
		fresh.insert(p, hashPacked(p), s.rec(off))
		return true
	})
	*s = *fresh
}

// all yields every key and record, in no particular order.
func (s *revSet) all() iter.Seq2[string, revRec] {
	return func(yield func(string, revRec) bool) {
		s.each(func(off int) bool { return yield(unpackRevKey(s.keyAt(off)), s.rec(off)) })
	}
}

// records yields every record without its key.
func (s *revSet) records() iter.Seq[revRec] {
	return func(yield func(revRec) bool) {
		s.each(func(off int) bool { return yield(s.rec(off)) })
	}
}

func (s *revSet) clone() *revSet {
	return &revSet{
		recs:      slices.Clone(s.recs),
		slots:     slices.Clone(s.slots),
		reasons:   slices.Clone(s.reasons),
		reasonIDs: maps.Clone(s.reasonIDs),
		live:      s.live,
		dead:      s.dead,
	}
}

// revTable is the revocations table of a state: a revSet shared
// copy-on-write with snapshots, as table is.
type revTable struct {
	set  *revSet
	refs *atomic.Int32
}

func newRevTable(hint int) revTable {
	return revTable{set: newRevSet(hint), refs: new(atomic.Int32)}
}

// mut returns the set for writing, cloning it first if a snapshot shares it.
func (t *revTable) mut() *revSet {
	if t.refs.Load() > 0 {
		t.set = t.set.clone()
		t.refs = new(atomic.Int32)
	}
	return t.set
}

// collect returns the keys and records of the revocations whose kind letter
// is in kinds (all for nil), in no particular order. The keys share one
// allocation.
func (s *revSet) collect(kinds []byte) ([]string, []revRec) {
	match := func(p []byte) bool { return kinds == nil || slices.Contains(kinds, p[0]) }
	n, size := 0, 0
	s.each(func(off int) bool {
		if p := s.keyAt(off); match(p) {
			n, size = n+1, size+unpackedLen(p)
		}
		return true
	})
	var b strings.Builder
	b.Grow(size)
	ends := make([]int, 0, n)
	recs := make([]revRec, 0, n)
	var tmp [1 + 2*revKeyMaxPacked]byte
	s.each(func(off int) bool {
		if p := s.keyAt(off); match(p) {
			b.Write(appendUnpacked(tmp[:0], p))
			ends = append(ends, b.Len())
			recs = append(recs, s.rec(off))
		}
		return true
	})
	all := b.String()
	keys := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		keys[i], start = all[start:end], end
	}
	return keys, recs
}

// unpackedLen is len(unpackRevKey(p)).
func unpackedLen(p []byte) int {
	if len(p) < 2 {
		return 0
	}
	n := len(p) - 2
	switch p[1] {
	case revFormHex:
		return 1 + 2*n
	case revFormHexOdd:
		if n == 0 {
			return 1
		}
		return 2 * n
	case revFormB64:
		return 1 + base64.RawURLEncoding.EncodedLen(n)
	}
	return 1 + n
}

// export returns every revocation, sorted by kind and id.
func (s *revSet) export() []Revocation { return s.exportKinds(nil) }

// exportKinds returns the revocations whose kind letter is in kinds (all
// for nil), sorted by kind and id.
func (s *revSet) exportKinds(kinds []byte) []Revocation {
	keys, recs := s.collect(kinds)
	out := make([]Revocation, len(keys))
	for i, j := range keyOrder(keys) {
		out[i] = recs[j].export(keys[j])
	}
	return out
}
