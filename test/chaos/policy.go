package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/keymesh/keymesh/identity/policy"
)

// SetPolicy writes the policy set (the built-in one with a marker comment)
// replacing the newest version the load knows: a compare-and-set on the
// policy version.
type SetPolicy struct{}

func (SetPolicy) Kind() OpKind { return OpPolicySet }
func (SetPolicy) Prepare(rng *rand.Rand, keys *Keys) Op {
	expect := keys.policyVersion.Load()
	if rng.IntN(4) == 0 && expect > 0 {
		expect-- // a stale writer: must get a conflict
	}
	return Op{Key: fmt.Sprintf("policy-%d", keys.next()), Expect: expect}
}
func (SetPolicy) Do(ctx context.Context, api API, op Op) (Op, error) {
	text := policy.DefaultText() + "\n// chaos " + op.Key + "\n"
	doc, err := api.SetPolicy(ctx, text, op.Expect)
	switch {
	case err == nil:
		op.Result, op.Version = ResOK, doc.Version
		return op, nil
	case isAPI(err, http.StatusConflict, "conflict"):
		op.Result = ResConflict
		return op, nil
	}
	return op, err
}

// PolicyModel is the policy version as a compare-and-set register: a write
// that expects the current version succeeds and moves it up by one; a write
// that expects another gets a conflict and changes nothing.
type PolicyModel struct{}

func (PolicyModel) Name() string { return "policy-versions" }

type polIn struct{ expect uint64 }
type polOut struct {
	result  string
	version uint64
	unknown bool
}

// Check implements Model: all policy writes are one partition.
func (m PolicyModel) Check(ops []Op, timeout time.Duration) Verdict {
	var pops []porcupine.Operation
	for _, op := range ops {
		if op.Kind != OpPolicySet || !definite(op) {
			continue
		}
		pops = append(pops, operation(op, polIn{expect: op.Expect}, polOut{result: op.Result, version: op.Version, unknown: op.Outcome != OK}))
	}
	return check(m.Name(), m.porcupine(), []partition{{name: "policy", ops: pops}}, timeout, 0)
}

// stepPolicy is the sequential specification.
func stepPolicy(v uint64, in polIn, out polOut) (bool, uint64) {
	switch {
	case out.unknown:
		// It took effect or it did not; placed where it matches, it may
		// have.
		if v == in.expect {
			return true, v + 1
		}
		return true, v
	case out.result == ResOK:
		return v == in.expect && out.version == v+1, v + 1
	case out.result == ResConflict:
		return v != in.expect, v
	}
	return false, v
}

func (PolicyModel) porcupine() porcupine.Model {
	return porcupine.Model{
		Init: func() any { return uint64(0) },
		Step: func(state, input, output any) (bool, any) {
			ok, next := stepPolicy(state.(uint64), input.(polIn), output.(polOut))
			return ok, next
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(polIn), output.(polOut)
			if out.unknown {
				return fmt.Sprintf("set(expect %d) -> ?", in.expect)
			}
			return fmt.Sprintf("set(expect %d) -> %s %d", in.expect, out.result, out.version)
		},
		DescribeState: func(state any) string { return fmt.Sprintf("version %d", state.(uint64)) },
	}
}
