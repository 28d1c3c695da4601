package rtr

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/btree"
)

// VRP is one validated ROA payload as routers see it: ASN may originate
// Prefix and its more specifics up to MaxLen.
type VRP struct {
	Prefix netip.Prefix
	MaxLen uint8
	ASN    uint32
}

func compareVRP(a, b VRP) int {
	if c := cmp.Compare(a.Prefix.Addr().BitLen(), b.Prefix.Addr().BitLen()); c != 0 {
		return c
	}
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.MaxLen, b.MaxLen); c != 0 {
		return c
	}
	return cmp.Compare(a.ASN, b.ASN)
}

// appendPrefix appends the prefix PDU of v: what PDU.Append writes for
// it, without building the PDU (a full answer writes 100,000s).
func appendPrefix(b []byte, version uint8, announce bool, v VRP) []byte {
	var flags byte
	if announce {
		flags = 1
	}
	a := v.Prefix.Addr()
	if a.Is4() {
		a4 := a.As4()
		return append(b, version, TypeIPv4Prefix, 0, 0, 0, 0, 0, 20, flags, byte(v.Prefix.Bits()), v.MaxLen, 0,
			a4[0], a4[1], a4[2], a4[3], byte(v.ASN>>24), byte(v.ASN>>16), byte(v.ASN>>8), byte(v.ASN))
	}
	a16 := a.As16()
	b = append(b, version, TypeIPv6Prefix, 0, 0, 0, 0, 0, 32, flags, byte(v.Prefix.Bits()), v.MaxLen, 0)
	b = append(b, a16[:]...)
	return append(b, byte(v.ASN>>24), byte(v.ASN>>16), byte(v.ASN>>8), byte(v.ASN))
}

// DefaultHistory is how many VRP changes (announcements and withdrawals)
// a cache keeps to answer Serial Queries; a router further behind gets a
// Cache Reset and reloads.
const DefaultHistory = 1 << 16

// delta is what changed from serial from to serial to.
type delta struct {
	from, to           uint64
	announce, withdraw []VRP
}

// Cache holds the VRPs at a serial and the recent changes, for every
// router connection of a Server. Serials are Raft indexes: serial S is
// the route authorizations as they were at index S, so any cache of the
// network (every root, every agent) that names S holds the same VRPs,
// and a delta between two serials is the same everywhere. A router sees
// the low 32 bits (RFC 1982 arithmetic); the session id changes with the
// high bits (see SessionID).
type Cache struct {
	mu       sync.RWMutex
	network  string
	ready    bool
	serial   uint64
	byPrefix map[netip.Prefix][]VRP
	sorted   *btree.BTreeG[VRP] // the same VRPs in the order they are sent
	count    int
	history  []delta
	histLen  int // VRPs in history
	histMax  int
	full     [MaxVersion + 1][]byte // encoded prefix PDUs of the current set, by version; nil until asked
	changed  chan struct{}
}

// NewCache returns an empty cache of network that answers No Data
// Available until its first Load. history bounds the changes kept (0:
// DefaultHistory).
func NewCache(network string, history int) *Cache {
	if history <= 0 {
		history = DefaultHistory
	}
	return &Cache{network: network, byPrefix: map[netip.Prefix][]VRP{}, sorted: newTree(),
		histMax: history, changed: make(chan struct{})}
}

func newTree() *btree.BTreeG[VRP] {
	return btree.NewG(32, func(a, b VRP) bool { return compareVRP(a, b) < 0 })
}

// SessionID is the session id of network's caches while serials stay
// within one 2^32 span: the same on every root and agent of the network,
// so that a router moving between them keeps its serial. When the Raft
// index passes a multiple of 2^32 the low 32 bits wrap and the id
// changes, and routers reload.
func SessionID(network string, serial uint64) uint16 {
	h := sha256.New()
	h.Write([]byte("keymesh rtr session\x00"))
	h.Write([]byte(network))
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(serial>>32))
	h.Write(b[:])
	return binary.BigEndian.Uint16(h.Sum(nil))
}

// Changed is closed at the next change of serial.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// State returns whether the cache has data, its serial and how many VRPs
// it holds.
func (c *Cache) State() (ready bool, serial uint64, count int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ready, c.serial, c.count
}

// VRPs returns the current VRPs, sorted.
func (c *Cache) VRPs() []VRP {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sortedLocked()
}

func (c *Cache) sortedLocked() []VRP {
	out := make([]VRP, 0, c.count)
	c.sorted.Ascend(func(v VRP) bool {
		out = append(out, v)
		return true
	})
	return out
}

// Load replaces the VRPs with vrps at serial (a full read of the state).
// A serial not above the current one is ignored, and so is a load of the
// VRPs the cache holds (the current serial still names them). What
// changed from the current VRPs is kept as a delta, so routers that are
// up to date still get an incremental answer.
func (c *Cache) Load(serial uint64, vrps []VRP) {
	next := map[netip.Prefix][]VRP{}
	for _, v := range vrps {
		if !slices.Contains(next[v.Prefix], v) {
			next[v.Prefix] = append(next[v.Prefix], v)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready && serial <= c.serial {
		return
	}
	changed := map[netip.Prefix][]VRP{}
	for p := range c.byPrefix {
		if _, ok := next[p]; !ok {
			changed[p] = nil
		}
	}
	for p, vs := range next {
		if !slices.Equal(c.byPrefix[p], vs) {
			changed[p] = vs
		}
	}
	if c.ready && len(changed) == 0 {
		// the same VRPs: the current serial still names them, and
		// routers are not told of a change that is none
		return
	}
	c.applyLocked(serial, changed)
}

// Update moves the cache to serial, where each prefix of changed has the
// VRPs given (none: it has no authorization any more). A serial not
// above the current one is ignored, as is an Update before the first
// Load.
func (c *Cache) Update(serial uint64, changed map[netip.Prefix][]VRP) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready || serial <= c.serial {
		return
	}
	c.applyLocked(serial, changed)
}

func (c *Cache) applyLocked(serial uint64, changed map[netip.Prefix][]VRP) {
	d := delta{from: c.serial, to: serial}
	for p, vs := range changed {
		old := c.byPrefix[p]
		for _, v := range old {
			if !slices.Contains(vs, v) {
				d.withdraw = append(d.withdraw, v)
				c.sorted.Delete(v)
			}
		}
		var keep []VRP
		for _, v := range vs {
			if slices.Contains(keep, v) {
				continue
			}
			keep = append(keep, v)
			if !slices.Contains(old, v) {
				d.announce = append(d.announce, v)
				c.sorted.ReplaceOrInsert(v)
			}
		}
		c.count += len(keep) - len(old)
		if len(keep) == 0 {
			delete(c.byPrefix, p)
		} else {
			c.byPrefix[p] = keep
		}
	}
	wasReady := c.ready
	quiet := wasReady && len(d.announce) == 0 && len(d.withdraw) == 0
	// The serial moves even when no VRP changed (an authorization without
	// an AS), to the index a full load of this state names too: a cache
	// that loads later, as a root that catches up in one batch does, then
	// names the data by the same serial. Routers are not told of such a
	// change (no Serial Notify), and the delta to it is empty.
	c.ready, c.serial = true, serial
	c.full = [MaxVersion + 1][]byte{}
	if wasReady && uint32(d.from>>32) == uint32(serial>>32) {
		c.history = append(c.history, d)
		c.histLen += len(d.announce) + len(d.withdraw)
		for len(c.history) > 0 && c.histLen > c.histMax {
			c.histLen -= len(c.history[0].announce) + len(c.history[0].withdraw)
			c.history = c.history[1:]
		}
	} else {
		c.history, c.histLen = nil, 0
	}
	if quiet {
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// answer is what the cache holds for a query: whether it has data, the
// current serial and session, and for a serial query whether the delta
// from the router's serial can be served, with the PDUs of that delta.
type answer struct {
	ready   bool
	serial  uint64
	session uint16
	found   bool
}

// encodedFull is the prefix PDUs of the current set in version v: cached
// per serial and version, so that every router asking at one serial
// costs one encoding. The bytes are shared: never change them.
func (c *Cache) encodedFull(v uint8) ([]byte, answer) {
	c.mu.RLock()
	a := answer{ready: c.ready, serial: c.serial, session: SessionID(c.network, c.serial)}
	enc := c.full[v]
	c.mu.RUnlock()
	if !a.ready || enc != nil {
		return enc, a
	}
	// Encode under the write lock, and answer with the serial read in
	// the same critical section: a change between the two locks must
	// not pair one serial with another's (or no) encoding.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.full[v] == nil {
		out := make([]byte, 0, c.count*32)
		c.sorted.Ascend(func(vrp VRP) bool {
			out = appendPrefix(out, v, true, vrp)
			return true
		})
		c.full[v] = out
	}
	return c.full[v], answer{ready: c.ready, serial: c.serial, session: SessionID(c.network, c.serial)}
}

// appendDelta appends the prefix PDUs that take a router from serial
// from (its low 32 bits, of session) to the current serial: withdrawals,
// then announcements, each sorted. found is false when the history does
// not reach back to from, or session is not the current one.
func (c *Cache) appendDelta(b []byte, v uint8, session uint16, from uint32) ([]byte, answer) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a := answer{ready: c.ready, serial: c.serial, session: SessionID(c.network, c.serial)}
	if !a.ready || session != a.session {
		return b, a
	}
	if uint32(c.serial) == from {
		a.found = true
		return b, a
	}
	start := -1
	for i, d := range c.history {
		if uint32(d.from) == from {
			start = i
			break
		}
	}
	if start < 0 {
		return b, a
	}
	a.found = true
	net := map[VRP]int{}
	for _, d := range c.history[start:] {
		for _, x := range d.withdraw {
			net[x]--
		}
		for _, x := range d.announce {
			net[x]++
		}
	}
	var ann, wd []VRP
	for x, n := range net {
		switch {
		case n > 0:
			ann = append(ann, x)
		case n < 0:
			wd = append(wd, x)
		}
	}
	slices.SortFunc(wd, compareVRP)
	slices.SortFunc(ann, compareVRP)
	for _, x := range wd {
		b = appendPrefix(b, v, false, x)
	}
	for _, x := range ann {
		b = appendPrefix(b, v, true, x)
	}
	return b, a
}
