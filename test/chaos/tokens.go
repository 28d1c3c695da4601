package chaos

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
)

// TokenModel is the life of one join token: create(uses) makes it; revoke
// -> ok (and revokes it), exists when already revoked, not_found when it
// does not exist; consume -> ok (one more use), not_found, revoked, or
// exhausted when every use is spent (the state machine checks in that
// order); a linearizable read of the token table shows its uses, its use
// count and whether it is revoked, or that it does not exist. Tokens do not
// expire during a run (the load makes them for two hours), but a token
// whose uses are all spent may be pruned at any time (the leader prunes
// every minute, a write no client sees): from then on it does not exist.
//
// The history is partitioned by token: its key is the description its
// creator chose; revokes and consumes name the id the cluster gave it,
// which creates and reads map back to the key. Local token lists are stale
// reads by design and are not part of the model (CheckTokenUses looks at
// them).
type TokenModel struct{}

func (TokenModel) Name() string { return "join-tokens" }

// tokState is one token; the zero value is a token that does not exist.
type tokState struct {
	Created bool
	Uses    int
	Used    int
	Revoked bool
	Pruned  bool // it existed, was used up, and is gone
}

func (s tokState) exists() bool { return s.Created && !s.Pruned }

type tokIn struct {
	kind OpKind
	uses int
	name string
}

type tokOut struct {
	result  string
	unknown bool
	view    *TokenView // reads: nil when the token is not listed
}

// Check implements Model.
func (m TokenModel) Check(ops []Op, timeout time.Duration) Verdict {
	keyOf := map[string]string{} // id -> key
	for _, op := range ops {
		if op.Kind == OpTokenCreate && op.Outcome == OK && op.Ref != "" {
			keyOf[op.Ref] = op.Key
		}
		for _, t := range op.Tokens {
			keyOf[t.Ref] = t.Key
		}
	}
	key := func(op Op) string {
		if op.Kind == OpTokenCreate {
			return op.Key
		}
		if k, ok := keyOf[op.Ref]; ok {
			return k
		}
		return "id:" + op.Ref // never made by the load
	}
	// What some operation saw of each token: that it exists, is revoked,
	// or has been used.
	type sight struct{ exists, revoked, used bool }
	seen := map[string]*sight{}
	see := func(k string) *sight {
		if seen[k] == nil {
			seen[k] = &sight{}
		}
		return seen[k]
	}
	for _, op := range ops {
		if !definite(op) || op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case OpTokenRevoke:
			if op.Result == ResOK || op.Result == ResExists {
				see(key(op)).exists = true
			}
			if op.Result == ResExists {
				see(key(op)).revoked = true
			}
		case OpTokenConsume:
			if op.Result != ResNotFound {
				see(key(op)).exists = true
			}
			if op.Result == ResRevoked {
				see(key(op)).revoked = true
			}
			if op.Result == ResExhausted {
				see(key(op)).used = true
			}
		case OpTokenRead, OpTokenList:
			for _, t := range op.Tokens {
				s := see(t.Key)
				s.exists = true
				s.revoked = s.revoked || t.Revoked
				s.used = s.used || t.Used > 0
			}
		}
	}
	byKey := map[string][]porcupine.Operation{}
	var reads []Op
	dropped := 0
	for _, op := range ops {
		if !definite(op) {
			continue
		}
		k := key(op)
		s := seen[k]
		if s == nil {
			s = &sight{}
		}
		switch op.Kind {
		case OpTokenCreate:
			if op.Outcome != OK && !s.exists {
				dropped++
				continue
			}
		case OpTokenRevoke:
			if op.Outcome != OK && !s.revoked {
				dropped++
				continue
			}
		case OpTokenConsume:
			if op.Outcome != OK && !s.used {
				dropped++
				continue
			}
		case OpTokenRead:
			reads = append(reads, op)
			continue
		default:
			continue
		}
		in := tokIn{kind: op.Kind, uses: op.Uses, name: k}
		byKey[k] = append(byKey[k], operation(op, in, tokOut{result: op.Result, unknown: op.Outcome != OK}))
	}
	// A read of the whole table is a read of every token.
	for _, op := range reads {
		views := map[string]TokenView{}
		for _, t := range op.Tokens {
			views[t.Key] = t
		}
		for k := range views {
			if _, ok := byKey[k]; !ok {
				byKey[k] = nil // listed but never made: its reads fail the model
			}
		}
		for k := range byKey {
			out := tokOut{result: ResOK}
			if v, ok := views[k]; ok {
				out.view = &v
			}
			byKey[k] = append(byKey[k], operation(op, tokIn{kind: OpTokenRead, name: k}, out))
		}
	}
	var parts []partition
	for k, p := range byKey {
		parts = append(parts, partition{name: k, ops: p})
	}
	return check(m.Name(), m.porcupine(), parts, timeout, dropped)
}

// stepToken is the sequential specification of one token: the states it
// may be in after the operation. A used-up token may have been pruned
// before it.
func stepToken(s tokState, in tokIn, out tokOut) []tokState {
	from := []tokState{s}
	if s.exists() && s.Used >= s.Uses {
		gone := s
		gone.Pruned = true
		from = append(from, gone)
	}
	var next []tokState
	for _, f := range from {
		if ok, n := stepOne(f, in, out); ok {
			next = append(next, n)
		}
	}
	return next
}

// stepOne is one operation on a token in a known state.
func stepOne(s tokState, in tokIn, out tokOut) (bool, tokState) {
	switch in.kind {
	case OpTokenCreate:
		if s.Created {
			// Ids and hashes are random and keys unique: a second
			// creation of one key cannot happen.
			return out.unknown, s
		}
		return true, tokState{Created: true, Uses: in.uses}
	case OpTokenRevoke:
		want, next := ResOK, s
		switch {
		case !s.exists():
			want = ResNotFound
		case s.Revoked:
			want = ResExists
		default:
			next.Revoked = true
		}
		if out.unknown {
			return true, next
		}
		return out.result == want, next
	case OpTokenConsume:
		want, next := ResOK, s
		switch {
		case !s.exists():
			want = ResNotFound
		case s.Revoked:
			want = ResRevoked
		case s.Used >= s.Uses:
			want = ResExhausted
		default:
			next.Used++
		}
		if out.unknown {
			return true, next
		}
		return out.result == want, next
	case OpTokenRead:
		if out.view == nil {
			return !s.exists(), s
		}
		v := out.view
		return s.exists() && v.Uses == s.Uses && v.Used == s.Used && v.Revoked == s.Revoked, s
	}
	return false, s
}

func (TokenModel) porcupine() porcupine.Model {
	nd := porcupine.NondeterministicModel{
		Init: func() []any { return []any{tokState{}} },
		Step: func(state, input, output any) []any {
			var out []any
			for _, n := range stepToken(state.(tokState), input.(tokIn), output.(tokOut)) {
				out = append(out, n)
			}
			return out
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(tokIn), output.(tokOut)
			res := out.result
			switch {
			case out.unknown:
				res = "unknown"
			case in.kind == OpTokenRead && out.view == nil:
				res = "absent"
			case in.kind == OpTokenRead:
				res = fmt.Sprintf("used %d/%d revoked=%v", out.view.Used, out.view.Uses, out.view.Revoked)
			}
			return fmt.Sprintf("%s(%s) -> %s", in.kind, in.name, res)
		},
		DescribeState: func(state any) string {
			s := state.(tokState)
			switch {
			case s.Pruned:
				return "pruned"
			case !s.Created:
				return "absent"
			}
			return fmt.Sprintf("used %d/%d revoked=%v", s.Used, s.Uses, s.Revoked)
		},
	}
	return nd.ToModel()
}
