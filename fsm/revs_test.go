package fsm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The packed form of a revocation key is held in memory only, but a change
// to it must be deliberate: these are its bytes.
func TestPackRevKeyGolden(t *testing.T) {
	cases := []struct {
		key  string
		want string // hex
	}{
		{"c1", "6302" + "01"},                 // odd hex: a zero nibble is implied
		{"c1ff", "6302" + "01ff"},             // odd
		{"cabcd", "6301" + "abcd"},            // even hex
		{"k0", "6b02" + "00"},                 // "0" stays "0"
		{"kAA", "6b03" + "00"},                // base64url
		{"tAAE", "7403" + "0001"},             // base64url, 3 digits
		{"tAAAA", "7403" + "000000"},          // base64url, 4 digits
		{"tAB", "7400" + "4142"},              // AB: unused bits set, kept raw
		{"tA", "7400" + "41"},                 // 1 mod 4, raw
		{"nnode", "6e03" + "9e875e"},          // ids are base64url when they can be
		{"nnode-1", "6e00" + hexOf("node-1")}, // unused bits set in "1": raw
		{"nnode.1", "6e00" + hexOf("node.1")}, // '.' is not base64url
		{"t" + strings.Repeat("f", 32), "7401" + strings.Repeat("ff", 16)},
		{"c", "6300"},      // an empty id: raw
		{"", ""},           // nothing
		{"tÿ", "7400c3bf"}, // not ASCII: raw
	}
	for _, c := range cases {
		got := hex.EncodeToString(packRevKey(nil, c.key))
		if got != c.want {
			t.Errorf("packRevKey(%q) = %s, want %s", c.key, got, c.want)
		}
		if c.key != "" {
			if back := unpackRevKey(packRevKey(nil, c.key)); back != c.key {
				t.Errorf("unpackRevKey(packRevKey(%q)) = %q", c.key, back)
			}
		}
	}
}

func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }

// FuzzPackRevKey: packing is injective (unpacking gives the key back) and
// the hash of a packed key is the hash of the key.
func FuzzPackRevKey(f *testing.F) {
	for _, s := range []string{"c1", "cabcdef0123", "tAAE", "tAB", "k" + strings.Repeat("_", 43), "n-", "t\x00\xff", "cABC=", "c0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if key == "" || len(key) > 1+MaxIDLen {
			return
		}
		p := packRevKey(nil, key)
		if back := unpackRevKey(p); back != key {
			t.Fatalf("unpackRevKey(packRevKey(%q)) = %q (packed %x)", key, back, p)
		}
		if unpackedLen(p) != len(key) {
			t.Fatalf("unpackedLen(packRevKey(%q)) = %d", key, unpackedLen(p))
		}
		if len(p) > revKeyMaxPacked {
			t.Fatalf("packed %q to %d bytes, more than %d", key, len(p), revKeyMaxPacked)
		}
		if hashPacked(p) != revHash(key[0], key[1:]) {
			t.Fatalf("hashPacked(packRevKey(%q)) differs from revHash", key)
		}
	})
}

// revOps drives a revSet and a plain map with the same random operations
// and compares them after each: adds, replaces, deletes (enough for several
// compactions and resizes), lookups of present and absent keys.
func TestRevSetMatchesMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	set := newRevSet(0)
	ref := map[string]revRec{}
	var keys []string
	longReason := strings.Repeat("r", reasonMaxLen+1)
	newKey := func() string {
		switch r.IntN(4) {
		case 0:
			return fmt.Sprintf("c%x", r.Uint64()>>r.IntN(60)) // hex, odd and even lengths
		case 1:
			b := make([]byte, 16)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			return "t" + hex.EncodeToString(b) // even hex
		case 2:
			return fmt.Sprintf("k%s", randB64(r))
		}
		return fmt.Sprintf("nnode.%d", r.IntN(1<<20))
	}
	check := func(step int) {
		t.Helper()
		if set.len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", step, set.len(), len(ref))
		}
		got := maps.Collect(set.all())
		if !maps.Equal(got, ref) {
			t.Fatalf("step %d: all() differs from the reference (%d vs %d records)", step, len(got), len(ref))
		}
	}
	for step := 0; step < 60_000; step++ {
		switch op := r.IntN(10); {
		case op < 5 || len(keys) == 0:
			k := newKey()
			reason := []string{"", "keyCompromise", "superseded", longReason, fmt.Sprint("rare-", step)}[r.IntN(5)]
			rec := revRec{reason: reason, time: int64(step), pruneAfter: int64(r.IntN(2)) * int64(step+10), index: uint64(step + 1)}
			if _, ok := ref[k]; !ok {
				keys = append(keys, k)
			}
			set.del(k) // a replaced record is written anew
			set.add(k, rec)
			ref[k] = rec
		case op < 8:
			i := r.IntN(len(keys))
			k := keys[i]
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			if !set.del(k) {
				t.Fatalf("step %d: del(%q) found nothing", step, k)
			}
			delete(ref, k)
			if set.has(k) {
				t.Fatalf("step %d: %q still there after del", step, k)
			}
		default:
			k := keys[r.IntN(len(keys))]
			if got, ok := set.get(k); !ok || got != ref[k] {
				t.Fatalf("step %d: get(%q) = %+v %v, want %+v", step, k, got, ok, ref[k])
			}
			if _, ok := set.get(k + "0"); ok != (ref[k+"0"] != revRec{}) {
				t.Fatalf("step %d: get(%q) = %v", step, k+"0", ok)
			}
			if set.del("x-absent") {
				t.Fatalf("step %d: deleted an absent key", step)
			}
		}
		if step%5000 == 0 {
			check(step)
		}
	}
	check(-1)
	// Delete all but a few: compaction runs and what is left is intact.
	for _, k := range keys[10:] {
		set.del(k)
		delete(ref, k)
	}
	check(-2)
	if len(set.recs) > 64<<10*3 {
		t.Errorf("%d bytes of records hold %d revocations: dead records were not compacted", len(set.recs), set.len())
	}
}

func randB64(r *rand.Rand) string {
	const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 22)
	for i := range b {
		b[i] = digits[r.IntN(64)]
	}
	return string(b)
}

// A snapshot's view of the revocations does not change when the store
// writes after it (the set is cloned on the first write).
func TestRevTableCopyOnWrite(t *testing.T) {
	tab := newRevTable(0)
	tab.mut().add("cabc", revRec{reason: "keyCompromise", index: 1})
	shared := tab.set
	tab.refs.Add(1) // a snapshot holds it
	tab.mut().add("cdef", revRec{index: 2})
	tab.mut().del("cabc")
	if shared.len() != 1 || !shared.has("cabc") || shared.has("cdef") {
		t.Fatalf("the shared set changed: %v", slices.Collect(maps.Keys(maps.Collect(shared.all()))))
	}
	if tab.set.len() != 1 || !tab.set.has("cdef") {
		t.Fatalf("the table lost its write")
	}
}

// Keys that cannot be looked up or stored are refused without a panic.
func TestRevSetBadKeys(t *testing.T) {
	s := newRevSet(0)
	if _, ok := s.get(""); ok {
		t.Fatal("found the empty key")
	}
	if s.del("") {
		t.Fatal("deleted the empty key")
	}
	s.add("", revRec{index: 1})
	if s.len() != 0 {
		t.Fatal("stored the empty key")
	}
	long := "n" + strings.Repeat("x.", MaxIDLen) // longer than any id Apply accepts
	s.add(long, revRec{index: 2})
	if r, ok := s.get(long); !ok || r.index != 2 {
		t.Fatal("a key longer than MaxIDLen was lost")
	}
	if !bytes.Equal(packRevKey(nil, long)[2:], []byte(long[1:])) {
		t.Fatal("a long dotted id is not kept raw")
	}
}
