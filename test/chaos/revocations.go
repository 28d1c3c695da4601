package chaos

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// RevocationModel is the revocation set: revoke(k) -> ok when k was absent
// (and adds it) or exists when it was present; read(k) -> present or
// absent; list(kind) -> exactly the keys of that kind. Revocations are
// never removed during a run (they are pruned only after their expiry, 30
// days out). The history is partitioned by key, but a kind that some list
// names is one partition.
//
// A write of unknown outcome that nobody saw is left out (it can always
// take effect last). The only write of a key that somebody saw present took
// effect before the first such answer and is checked as if it had been
// acknowledged then: both keep the search small without excluding any
// valid order.
type RevocationModel struct{}

func (RevocationModel) Name() string { return "revocations" }

// revIn is the input of a revocation operation: what and on which key (an
// index into the partition's keys; -1 for lists).
type revIn struct {
	kind OpKind
	key  int
	name string // the key's name, for the visualization
}

// revOut is the answer; set holds a list's keys as bits.
type revOut struct {
	result  string
	set     bits
	unknown bool
}

// Check implements Model.
func (m RevocationModel) Check(ops []Op, timeout time.Duration) Verdict {
	// seen: the earliest completion of an operation that saw a key
	// present; writes: how many writes of a key may have taken effect;
	// listed: the kinds some list names.
	seen := map[string]time.Duration{}
	see := func(k string, at time.Duration) {
		if t, ok := seen[k]; !ok || at < t {
			seen[k] = at
		}
	}
	writes := map[string]int{}
	listed := map[string]bool{}
	for _, op := range ops {
		if !definite(op) {
			continue
		}
		switch op.Kind {
		case OpRevoke, OpProbe:
			writes[op.Key]++
			if op.Outcome == OK && op.Result == ResExists {
				see(op.Key, op.Return)
			}
		case OpReadRevocation:
			if op.Result == ResPresent {
				see(op.Key, op.Return)
			}
		case OpListRevocations:
			listed[op.Key] = true
			for _, k := range op.Values {
				see(k, op.Return)
			}
		}
	}
	type part struct {
		index map[string]int
		ops   []Op
	}
	parts := map[string]*part{}
	// A kind that is listed is one object; the keys of any other kind are
	// independent objects of their own (linearizability is local).
	get := func(key string) *part {
		name := key
		if kind, _ := SplitKey(key); listed[kind] {
			name = kind
		}
		p := parts[name]
		if p == nil {
			p = &part{index: map[string]int{}}
			parts[name] = p
		}
		return p
	}
	dropped := 0
	for _, op := range ops {
		if !definite(op) {
			continue
		}
		switch op.Kind {
		case OpRevoke, OpProbe:
			at, ok := seen[op.Key]
			switch {
			case op.Outcome == OK:
			case !ok:
				dropped++ // never observed: it can always take effect last
				continue
			case writes[op.Key] == 1:
				// The only write of the key, and someone saw the key: it
				// took effect before that one's answer, so it may be
				// taken as answered then.
				op.Outcome, op.Result, op.Return = OK, ResOK, max(at, op.Call)
			}
			get(op.Key).ops = append(get(op.Key).ops, op)
		case OpReadRevocation:
			get(op.Key).ops = append(get(op.Key).ops, op)
		case OpListRevocations:
			get(op.Key + "/").ops = append(get(op.Key+"/").ops, op)
		}
	}
	var out []partition
	for name, p := range parts {
		// Number the keys first so that every set has the same width.
		for _, op := range p.ops {
			keys := op.Values
			if op.Kind != OpListRevocations {
				keys = []string{op.Key}
			}
			for _, k := range keys {
				if _, ok := p.index[k]; !ok {
					p.index[k] = len(p.index)
				}
			}
		}
		width := (len(p.index) + 63) / 64
		pp := partition{name: name}
		for _, op := range p.ops {
			in := revIn{kind: op.Kind, key: -1, name: op.Key}
			if op.Kind == OpProbe {
				in.kind = OpRevoke
			}
			if op.Kind != OpListRevocations {
				in.key = p.index[op.Key]
			}
			out := revOut{result: op.Result, unknown: op.Outcome != OK}
			if op.Kind == OpListRevocations {
				out.set = make(bits, width)
				for _, k := range op.Values {
					out.set = out.set.with(p.index[k])
				}
			}
			pp.ops = append(pp.ops, operation(op, in, out))
		}
		out = append(out, pp)
	}
	return check(m.Name(), m.porcupine(), out, timeout, dropped)
}

// porcupine is the sequential specification. A state is the set of present
// keys as bits of their indexes in the partition; sets compare by content.
func (RevocationModel) porcupine() porcupine.Model {
	return porcupine.Model{
		Init: func() any { return bits(nil) },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(bits), input.(revIn), output.(revOut)
			switch in.kind {
			case OpRevoke:
				has := s.has(in.key)
				switch {
				case out.unknown:
					return true, s.with(in.key)
				case out.result == ResOK:
					return !has, s.with(in.key)
				case out.result == ResExists:
					return has, s
				}
				return false, s
			case OpReadRevocation:
				return (out.result == ResPresent) == s.has(in.key), s
			case OpListRevocations:
				return s.equal(out.set), s
			}
			return false, s
		},
		Equal: func(a, b any) bool { return a.(bits).equal(b.(bits)) },
		Hash:  func(s any) uint64 { return s.(bits).hash() },
		DescribeOperation: func(input, output any) string {
			in, out := input.(revIn), output.(revOut)
			res := out.result
			if out.unknown {
				res = "unknown"
			}
			if in.kind == OpListRevocations {
				return fmt.Sprintf("list() -> %d keys", out.set.count())
			}
			return fmt.Sprintf("%s(%s) -> %s", strings.TrimPrefix(string(in.kind), "revocation."), in.name, res)
		},
		DescribeState: func(s any) string { return fmt.Sprintf("%d keys", s.(bits).count()) },
	}
}

// bits is an immutable set of small integers: with returns a new set.
type bits []uint64

func (b bits) has(i int) bool {
	w := i / 64
	return w < len(b) && b[w]&(1<<(i%64)) != 0
}

func (b bits) with(i int) bits {
	if b.has(i) {
		return b
	}
	w := i / 64
	n := make(bits, max(len(b), w+1))
	copy(n, b)
	n[w] |= 1 << (i % 64)
	return n
}

// trim drops trailing zero words, so that equal sets have equal words.
func (b bits) trim() bits {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

func (b bits) equal(o bits) bool { return slices.Equal(b.trim(), o.trim()) }

func (b bits) hash() uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, w := range b.trim() {
		for i := range buf {
			buf[i] = byte(w >> (8 * i))
		}
		h.Write(buf[:])
	}
	return h.Sum64()
}

func (b bits) count() int {
	n := 0
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}
