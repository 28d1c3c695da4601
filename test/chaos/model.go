package chaos

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// A Model checks that the operations of a history on one kind of state are
// linearizable: that some order of them, consistent with real time, is a
// legal sequential run of the model. Models keep their sequential
// specification in code (a porcupine.Model) and say how the history splits
// into independent partitions.
type Model interface {
	Name() string
	// Check checks ops (the whole history; the model picks its own
	// operations) and gives up after timeout.
	Check(ops []Op, timeout time.Duration) Verdict
}

// Models is the set of models every run is checked against.
func Models() []Model { return []Model{RevocationModel{}, TokenModel{}, PolicyModel{}} }

// Verdict is a model's answer for one history.
type Verdict struct {
	Model string `json:"model"`
	// Result is "ok", "violation", or "unknown" when the checker ran out
	// of time.
	Result string `json:"result"`
	// Ops is how many operations were checked, Partitions in how many
	// independent parts, Open how many of them had no definite outcome.
	Ops        int `json:"ops"`
	Partitions int `json:"partitions"`
	Open       int `json:"open"`
	// Dropped counts unknown writes left out because no operation ever saw
	// their effect (they can always be placed last).
	Dropped int `json:"dropped"`
	// Partition names the first partition that is not linearizable.
	Partition string        `json:"partition,omitempty"`
	Elapsed   time.Duration `json:"elapsed_ns"`

	model porcupine.Model
	info  porcupine.LinearizationInfo
}

// Verdict results.
const (
	VerdictOK        = "ok"
	VerdictViolation = "violation"
	VerdictUnknown   = "unknown"
)

// Visualize writes porcupine's HTML view of the failing partition to path.
func (v Verdict) Visualize(path string) error {
	if v.model.Init == nil {
		return fmt.Errorf("chaos: verdict of %s has nothing to show", v.Model)
	}
	return porcupine.VisualizePath(v.model, v.info, path)
}

// open is the completion time given to operations without a definite
// outcome: they may take effect at any time after their call, or never.
const open = math.MaxInt64

// partition is one independent part of a history.
type partition struct {
	name string
	ops  []porcupine.Operation
}

// check runs porcupine on each partition (in order of name) and stops at
// the first that is not linearizable.
func check(name string, m porcupine.Model, parts []partition, timeout time.Duration, dropped int) Verdict {
	start := time.Now()
	v := Verdict{Model: name, Result: VerdictOK, Partitions: len(parts), Dropped: dropped, model: m}
	sort.Slice(parts, func(i, j int) bool { return parts[i].name < parts[j].name })
	deadline := start.Add(timeout)
	for _, p := range parts {
		v.Ops += len(p.ops)
		for _, op := range p.ops {
			if op.Return == open {
				v.Open++
			}
		}
	}
	for _, p := range parts {
		left := time.Until(deadline)
		if left <= 0 {
			v.Result, v.Partition = VerdictUnknown, p.name
			break
		}
		res, info := porcupine.CheckOperationsVerbose(m, p.ops, left)
		if res == porcupine.Ok {
			continue
		}
		v.Partition, v.info = p.name, info
		v.Result = VerdictViolation
		if res == porcupine.Unknown {
			v.Result = VerdictUnknown
		}
		break
	}
	v.Elapsed = time.Since(start)
	return v
}

// operation converts op to porcupine's form; operations without a definite
// outcome never complete.
func operation(op Op, in, out any) porcupine.Operation {
	ret := int64(op.Return)
	if op.Outcome != OK {
		ret = open
	}
	return porcupine.Operation{ClientId: clientIndex(op.Client), Input: in, Call: int64(op.Call), Output: out, Return: ret}
}

// clientIndex maps client ids (negative for the checker's own reads) to
// porcupine's zero-based ids.
func clientIndex(c int) int {
	if c < 0 {
		return 0
	}
	return c
}

// definite reports whether op counts for a model: writes with any outcome
// but Fail, reads only when they answered.
func definite(op Op) bool {
	if op.Kind.IsWrite() {
		return op.Outcome != Fail
	}
	return op.Outcome == OK
}
