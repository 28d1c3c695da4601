package fsm

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// keyOrder returns the indexes of keys in ascending key order. Keys must
// be distinct.
//
// It is a most-significant-digit radix sort with 16-byte digits: each
// round sorts small inline records (the next 16 bytes of the key as two
// integers, and how many bytes are left) and only the runs that tie on a
// whole digit go on to the next 16 bytes. Comparing inline integers keeps
// the sort in cache, where comparing the strings would chase a pointer per
// comparison; and ids that share long prefixes (node-000001, ...) cost a
// round per 16 shared bytes instead of a long compare each time.
func keyOrder(keys []string) []int32 {
	ks := make([]sortKey, len(keys))
	for i := range ks {
		ks[i].i = int32(i)
	}
	sortDigits(keys, ks, 0)
	out := make([]int32, len(ks))
	for i, k := range ks {
		out[i] = k.i
	}
	return out
}

type sortKey struct {
	p0, p1 uint64 // bytes off..off+16 of the key, big-endian, zero padded
	n      int32  // bytes of the key from off on, capped at 17 (17: more digits follow)
	i      int32  // index into keys
}

func cmpSortKey(a, b sortKey) int {
	if a.p0 != b.p0 {
		return cmp.Compare(a.p0, b.p0)
	}
	if a.p1 != b.p1 {
		return cmp.Compare(a.p1, b.p1)
	}
	// Equal padded digits: the shorter key is a prefix of the longer.
	return cmp.Compare(a.n, b.n)
}

func sortDigits(keys []string, ks []sortKey, off int) {
	for j := range ks {
		k := keys[ks[j].i]
		var b [16]byte
		n := 0
		if off < len(k) {
			n = copy(b[:], k[off:])
			if len(k)-off > 16 {
				n = 17
			}
		}
		ks[j].p0, ks[j].p1, ks[j].n = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), int32(n)
	}
	slices.SortFunc(ks, cmpSortKey)
	for start := 0; start < len(ks); {
		end := start + 1
		for end < len(ks) && cmpSortKey(ks[start], ks[end]) == 0 {
			end++
		}
		if end-start > 1 && ks[start].n == 17 {
			sortDigits(keys, ks[start:end], off+16)
		}
		start = end
	}
}
