package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Benchmarks report, next to their own figure, the floor they are compared
// with, measured in the same run:
//
//	BenchmarkApply/*       vs json.Unmarshal of the same payload (Apply decodes it once)
//	BenchmarkSnapshot100k  vs sha256 over the same bytes (the body is hashed) and encoding/json
//	BenchmarkRestore100k   vs sha256 over the same bytes and encoding/json
//	BenchmarkRevoked1M     vs a lookup in a plain map[string]struct{} of the same keys
//
// Run: go test ./fsm -run '^$' -bench . -benchmem

// floorNs times f over n calls and returns ns per call.
func floorNs(n int, f func(i int)) float64 {
	start := time.Now()
	for i := 0; i < n; i++ {
		f(i)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func BenchmarkApply(b *testing.B) {
	later := t0.Add(240 * time.Hour)
	cases := []struct {
		name    string
		typ     MsgType
		payload func(i int) any
		decode  func() any // the payload struct, for the floor
		prepare func(h *harness, n int)
	}{
		{name: "Revoke", typ: MsgRevoke, decode: func() any { return new(Revoke) },
			payload: func(i int) any {
				return Revoke{Revocation: Revocation{Kind: RevocationCert, ID: fmt.Sprintf("%x", 1<<60+i), Reason: "keyCompromise", PruneAfter: later}}
			}},
		{name: "JoinTokenConsume", typ: MsgJoinTokenConsume, decode: func() any { return new(JoinTokenConsume) },
			payload: func(i int) any {
				return JoinTokenConsume{Hash: hashOf(fmt.Sprint("bench-", i/MaxTokenUses)), Kind: TokenKindNode, NodeID: "node-1"}
			},
			prepare: func(h *harness, n int) {
				for k := 0; k <= n/MaxTokenUses; k++ {
					id := fmt.Sprint("bench-", k)
					h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: id, Hash: hashOf(id), Kind: TokenKindNode, Uses: MaxTokenUses, Expiry: later}})
				}
			}},
		{name: "NodeCertRenew", typ: MsgNodeCertRenew, decode: func() any { return new(NodeCertRenew) },
			payload: func(i int) any {
				return NodeCertRenew{Cert: Issued{Issuer: "root-1", Serial: fmt.Sprintf("%x", 1<<60+i), NodeID: "node-a", NotAfter: later, Cert: bytes.Repeat([]byte{0x30}, 600)}}
			}},
		{name: "RegistrationCreateWithToken", typ: MsgRegistrationCreate, decode: func() any { return new(RegistrationCreate) },
			payload: func(i int) any {
				node := fmt.Sprint("node-", i)
				return RegistrationCreate{
					Registration: Registration{ID: "reg-" + node, NodeID: node, Network: testNetwork, Principal: PrincipalNode, CSR: bytes.Repeat([]byte{0x30}, 400)},
					TokenHash:    hashOf(fmt.Sprint("bench-", i/MaxTokenUses)),
					Cert:         &Issued{Issuer: "root-1", Serial: fmt.Sprintf("%x", 1<<60+i), NodeID: node, NotAfter: later, Cert: bytes.Repeat([]byte{0x30}, 600)},
				}
			},
			prepare: func(h *harness, n int) {
				for k := 0; k <= n/MaxTokenUses; k++ {
					id := fmt.Sprint("bench-", k)
					h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: id, Hash: hashOf(id), Kind: TokenKindNode, Uses: MaxTokenUses, Expiry: later}})
				}
			}},
		{name: "PolicySet", typ: MsgPolicySet, decode: func() any { return new(PolicySet) },
			payload: func(i int) any {
				return PolicySet{Text: "permit(principal, action, resource);", ExpectVersion: uint64(i)}
			}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b)
			h.seed()
			if tc.prepare != nil {
				tc.prepare(h, b.N)
			}
			ts := h.now.Add(time.Second)
			cmds := make([][]byte, b.N)
			for i := range cmds {
				cmds[i] = rawCommand(tc.typ, 1, ts, tc.payload(i))
			}
			first := h.idx + 1
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if res := h.s.Apply(first+uint64(i), cmds[i]); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
			b.StopTimer()
			applyNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			n := min(b.N, 20000)
			env, _ := Decode(cmds[0])
			floor := floorNs(n, func(int) { _ = json.Unmarshal(env.Payload, tc.decode()) })
			b.ReportMetric(floor, "json-decode-ns")
			b.ReportMetric(applyNs/floor, "x-json-decode")
		})
	}
}

// bigRevocationStore holds n revocations shaped like real ones: half
// certificate serials (128-bit, hex), half token ids (UUID text), a reason
// on some, a prune-after on all. Inserted directly: building a million
// through Apply would time the JSON, not the table.
func bigRevocationStore(n int) *Store {
	s := New()
	r := rand.New(rand.NewPCG(uint64(n), 7))
	set := s.st.revs.mut()
	base := t0.UnixNano()
	reasons := []string{"", "keyCompromise", "superseded", "cessationOfOperation"}
	for i := 0; i < n; i++ {
		var key string
		if i%2 == 0 {
			key = fmt.Sprintf("c%x%016x", r.Uint64()>>1|1<<61, r.Uint64()) // a 127-bit serial
		} else {
			key = fmt.Sprintf("t%08x-%04x-4%03x-8%03x-%012x", r.Uint32(), r.IntN(1<<16), r.IntN(1<<12), r.IntN(1<<12), r.Int64N(1<<48))
		}
		// Cloned as JSON decoding would.
		reason := strings.Clone(reasons[i%len(reasons)])
		set.add(key, revRec{reason: reason, time: base + int64(i), pruneAfter: base + int64(i) + int64(24*time.Hour), index: uint64(i + 1)})
	}
	s.index.Store(uint64(n))
	return s
}

func jsonRevocations(s *Store) []byte {
	data, err := json.Marshal(s.Revocations())
	if err != nil {
		panic(err)
	}
	return data
}

func BenchmarkSnapshot100k(b *testing.B) {
	s := bigRevocationStore(100_000)
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		sn, err := s.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		n, err := sn.WriteTo(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		sn.Release()
		size = n
	}
	ms := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / 1e6
	data := snapshotBytes(b, s)
	shaMs := floorNs(5, func(int) { sha256.Sum256(data) }) / 1e6
	jsonMs := floorNs(3, func(int) { jsonRevocations(s) }) / 1e6
	b.ReportMetric(ms, "ms")
	b.ReportMetric(float64(size)/1e6, "snapshot-MB")
	b.ReportMetric(shaMs, "sha256-ms")
	b.ReportMetric(ms/shaMs, "x-sha256")
	b.ReportMetric(jsonMs, "json-encode-ms")
}

func BenchmarkRestore100k(b *testing.B) {
	data := snapshotBytes(b, bigRevocationStore(100_000))
	b.ReportAllocs()
	for b.Loop() {
		s := New()
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	ms := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / 1e6
	shaMs := floorNs(5, func(int) { sha256.Sum256(data) }) / 1e6
	js := jsonRevocations(bigRevocationStore(100_000))
	jsonMs := floorNs(3, func(int) {
		var out []Revocation
		if err := json.Unmarshal(js, &out); err != nil {
			b.Fatal(err)
		}
	}) / 1e6
	b.ReportMetric(ms, "ms")
	b.ReportMetric(float64(len(data))/1e6, "snapshot-MB")
	b.ReportMetric(shaMs, "sha256-ms")
	b.ReportMetric(ms/shaMs, "x-sha256")
	b.ReportMetric(jsonMs, "json-decode-ms")
}

// BenchmarkFirstWriteAfterSnapshot is the copy-on-write cost: the first
// write to a table a snapshot shares copies that table.
func BenchmarkFirstWriteAfterSnapshot100k(b *testing.B) {
	s := bigRevocationStore(100_000)
	idx := s.Index()
	b.ReportAllocs()
	for b.Loop() {
		sn, _ := s.Snapshot()
		idx++
		data := rawCommand(MsgRevoke, 1, t0, Revoke{Revocation: Revocation{Kind: RevocationKey, ID: fmt.Sprint("k", idx)}})
		if res := s.Apply(idx, data); res.Err != nil {
			b.Fatal(res.Err)
		}
		sn.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms")
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func BenchmarkRevoked1M(b *testing.B) {
	const n = 1_000_000
	before := heapInUse()
	s := bigRevocationStore(n)
	perEntry := float64(heapInUse()-before) / n

	// Look up stored ids (hits) and others (misses), half and half.
	var ids []struct {
		kind RevocationKind
		id   string
	}
	plain := make(map[string]struct{}, n)
	for k := range s.st.revs.set.all() {
		plain[k] = struct{}{}
		kind, _ := revKindOf(k[0])
		if len(ids) < 4096 {
			ids = append(ids, struct {
				kind RevocationKind
				id   string
			}{kind, k[1:]})
			ids = append(ids, struct {
				kind RevocationKind
				id   string
			}{kind, k[1:] + "x"})
		}
	}
	b.ReportAllocs()
	i, hits := 0, 0
	for b.Loop() {
		q := ids[i%len(ids)]
		if _, ok := s.Revoked(q.kind, q.id); ok {
			hits++
		}
		i++
	}
	if hits != (i+1)/2 {
		b.Fatalf("%d hits in %d lookups", hits, i)
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	keys := make([]string, len(ids))
	for j, q := range ids {
		keys[j] = string(revKindByte(q.kind)) + q.id
	}
	floor := floorNs(1_000_000, func(j int) { _ = plain[keys[j%len(keys)]] })
	b.ReportMetric(perEntry, "bytes/entry")
	b.ReportMetric(floor, "plain-map-ns")
	b.ReportMetric(ns/floor, "x-plain-map")
	runtime.KeepAlive(s)
}
