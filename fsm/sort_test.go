package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestKeyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sets := map[string][]string{
		"empty":  {},
		"one":    {"x"},
		"tricky": {"", "a", "a\x00", "a\x00\x00", "ab", "b", strings.Repeat("a", 16), strings.Repeat("a", 16) + "\x00", strings.Repeat("a", 17), strings.Repeat("a", 15), strings.Repeat("a", 32), strings.Repeat("a", 33), strings.Repeat("a", 31) + "b", "\xff", "\xff\xff"},
	}
	var shared, random []string
	for i := 0; i < 3000; i++ {
		shared = append(shared, fmt.Sprintf("spiffe://mainnet.example.net/node/%06d", r.IntN(1_000_000)))
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = byte(r.IntN(4)) // small alphabet: many ties
		}
		random = append(random, string(b))
	}
	sets["shared prefix"], sets["random"] = shared, random
	for name, keys := range sets {
		keys = slices.Compact(slices.Sorted(slices.Values(keys)))
		shuffled := slices.Clone(keys)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		order := keyOrder(shuffled)
		got := make([]string, len(order))
		for i, o := range order {
			got[i] = shuffled[o]
		}
		if !slices.Equal(got, keys) {
			t.Errorf("%s: keyOrder disagrees with slices.Sort", name)
		}
	}
}
