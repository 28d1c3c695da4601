package chaos

import (
	"fmt"
	"sort"
	"time"
)

// Violation is one broken promise found by a check.
type Violation struct {
	Check  string `json:"check"`
	Detail string `json:"detail"`
}

func (v Violation) String() string { return v.Check + ": " + v.Detail }

// Final is what one root server holds after the run, once every server has
// applied the same log. The report shows only its hash and index; the kept
// finals.json has everything.
type Final struct {
	Server string `json:"server"`
	// Consistent are the revocation keys a consistent read through this
	// server returned; Local those of its own replica.
	Consistent map[string]bool `json:"consistent,omitempty"`
	Local      map[string]bool `json:"local,omitempty"`
	// Tokens are the load's join tokens in its replica, by key.
	Tokens map[string]TokenView `json:"tokens,omitempty"`
	// Nodes are the load's registrations as a consistent read through this
	// server lists them, by node id.
	Nodes map[string]NodeView `json:"nodes,omitempty"`
	// StateHash and AppliedIndex as the server reports them.
	StateHash    string `json:"state_hash"`
	AppliedIndex uint64 `json:"applied_index"`
}

// WrittenKeys returns the revocation keys of every write in ops.
func WrittenKeys(ops []Op) map[string]bool {
	out := map[string]bool{}
	for _, op := range ops {
		if op.Kind == OpRevoke || op.Kind == OpProbe {
			out[op.Key] = true
		}
	}
	return out
}

// RecordReads records a consistent list of revocations, made through
// server between call and ret, as a read of each key in keys: present when
// the list had it. Unlike a list, such reads leave the keys independent
// for the model.
func RecordReads(rec *Recorder, server string, keys, present map[string]bool, call, ret time.Duration) {
	for k := range keys {
		res := ResAbsent
		if present[k] {
			res = ResPresent
		}
		rec.Record(Op{Kind: OpReadRevocation, Client: FinalClient, Server: server, Key: k, Outcome: OK, Result: res, Call: call, Return: ret})
	}
}

// NodeView is a registration as a list shows it.
type NodeView struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	Issuer string `json:"issuer,omitempty"`
	Serial string `json:"serial,omitempty"`
}

// maxListed bounds how many keys a violation names.
const maxListed = 10

// CheckFinal checks that every acknowledged write is on every server, in
// consistent and in local reads, and that every server has the same state
// hash. A join token whose uses may all be spent may be missing (the
// leader prunes such tokens). It returns the violations and how many
// acknowledged writes are missing somewhere (lost).
func CheckFinal(ops []Op, finals []Final) (vs []Violation, lost int) {
	if len(finals) == 0 {
		return []Violation{{"final", "no server's final state was read"}}, 0
	}
	hashes := map[string][]string{}
	for _, f := range finals {
		hashes[f.StateHash] = append(hashes[f.StateHash], f.Server)
	}
	if len(hashes) != 1 || finals[0].StateHash == "" {
		vs = append(vs, Violation{"state-hash", fmt.Sprintf("servers disagree: %v", hashes)})
	}
	// A token whose uses may all be spent may have been pruned.
	uses, spent, keyOf := map[string]int{}, map[string]int{}, map[string]string{}
	for _, op := range ops {
		if op.Kind == OpTokenCreate {
			uses[op.Key] = op.Uses
			if op.Ref != "" {
				keyOf[op.Ref] = op.Key
			}
		}
	}
	for _, op := range ops {
		if op.Kind == OpTokenConsume && (op.Outcome == Unknown || op.Outcome == Pending || op.Outcome == OK && op.Result == ResOK) {
			spent[keyOf[op.Ref]]++
		}
	}
	prunable := func(key string) bool { return key != "" && spent[key] >= uses[key] }
	missing := map[string][]string{} // write -> where it is missing
	for _, op := range ops {
		if op.Outcome != OK {
			continue
		}
		switch {
		case (op.Kind == OpRevoke || op.Kind == OpProbe) && (op.Result == ResOK || op.Result == ResExists):
			for _, f := range finals {
				if !f.Consistent[op.Key] {
					missing[op.Key] = append(missing[op.Key], f.Server+" (consistent read)")
				}
				if !f.Local[op.Key] {
					missing[op.Key] = append(missing[op.Key], f.Server+" (local read)")
				}
			}
		case op.Kind == OpTokenCreate && op.Result == ResOK:
			for _, f := range finals {
				if _, ok := f.Tokens[op.Key]; !ok && !prunable(op.Key) {
					missing["token "+op.Key] = append(missing["token "+op.Key], f.Server)
				}
			}
		case op.Kind == OpTokenRevoke && op.Result == ResOK:
			for _, f := range finals {
				t, ok := f.Tokens[keyOf[op.Ref]]
				if ok && !t.Revoked || !ok && !prunable(keyOf[op.Ref]) {
					missing["revocation of token "+op.Ref] = append(missing["revocation of token "+op.Ref], f.Server)
				}
			}
		case op.Kind == OpTokenConsume && op.Result == ResOK:
			for _, f := range finals {
				if n, ok := f.Nodes[op.Node]; !ok || n.Status != "approved" || n.Serial != op.Serial {
					what := "registration of " + op.Node + " (serial " + op.Serial + ")"
					missing[what] = append(missing[what], fmt.Sprintf("%s (has %+v)", f.Server, n))
				}
			}
		}
	}
	return append(vs, missingWrites("lost", "acknowledged write", missing)...), len(missing)
}

// missingWrites lists the writes of missing (write -> where it is missing)
// as violations of check, sorted, at most maxListed of them.
func missingWrites(check, what string, missing map[string][]string) []Violation {
	keys := make([]string, 0, len(missing))
	for k := range missing {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var vs []Violation
	for i, k := range keys {
		if i == maxListed {
			vs = append(vs, Violation{check, fmt.Sprintf("... and %d more", len(keys)-maxListed)})
			break
		}
		vs = append(vs, Violation{check, fmt.Sprintf("%s %s is missing on %v", what, k, missing[k])})
	}
	return vs
}

// CheckSerials checks that no issuer signed two of the load's
// certificates with one serial, as each server's final state shows them.
func CheckSerials(finals []Final) []Violation {
	var vs []Violation
	for _, f := range finals {
		seen := map[[2]string]string{}
		for _, n := range f.Nodes {
			if n.Status != "approved" {
				continue
			}
			k := [2]string{n.Issuer, n.Serial}
			if other, dup := seen[k]; dup {
				vs = append(vs, Violation{"serials", fmt.Sprintf("%s: issuer %s gave serial %s to %s and %s", f.Server, n.Issuer, n.Serial, other, n.Node)})
			}
			seen[k] = n.Node
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Detail < vs[j].Detail })
	return vs
}

// CheckTokenUses checks that no join token was used more often than it
// allows: by the acknowledged uses in the history and by every list and
// final state that shows it; that a final state counts every acknowledged
// use and no use nobody may have made; and that no list shows a token of
// the load that no client asked for.
func CheckTokenUses(ops []Op, finals []Final) []Violation {
	var vs []Violation
	uses := map[string]int{}  // token key -> uses it was made with
	made := map[string]bool{} // keys of every create invoked
	keyOf := map[string]string{}
	for _, op := range ops {
		if op.Kind == OpTokenCreate {
			made[op.Key] = true
			uses[op.Key] = op.Uses
			if op.Ref != "" {
				keyOf[op.Ref] = op.Key
			}
		}
	}
	consumed := map[string]int{} // acknowledged uses by token key
	maybe := map[string]int{}    // uses of unknown outcome
	over := func(where string, t TokenView) {
		if t.Used > t.Uses {
			vs = append(vs, Violation{"token-uses", fmt.Sprintf("%s shows token %s used %d times of %d", where, t.Ref, t.Used, t.Uses)})
		}
		if !made[t.Key] {
			vs = append(vs, Violation{"token-phantom", fmt.Sprintf("%s shows token %s (%s) that no client made", where, t.Ref, t.Key)})
		}
	}
	for _, op := range ops {
		if k, ok := keyOf[op.Ref]; ok && op.Kind == OpTokenConsume {
			switch {
			case op.Outcome == OK && op.Result == ResOK:
				consumed[k]++
			case op.Outcome == Unknown || op.Outcome == Pending:
				maybe[k]++
			}
		}
		for _, t := range op.Tokens {
			over(fmt.Sprintf("op %d (%s via %s)", op.ID, op.Kind, op.Server), t)
		}
	}
	for k, n := range consumed {
		if n > uses[k] {
			vs = append(vs, Violation{"token-uses", fmt.Sprintf("token %s was used %d times, acknowledged each time, but allows %d", k, n, uses[k])})
		}
	}
	for _, f := range finals {
		for _, t := range f.Tokens {
			over("final state of "+f.Server, t)
			if t.Used < consumed[t.Key] || t.Used > consumed[t.Key]+maybe[t.Key] {
				vs = append(vs, Violation{"token-uses", fmt.Sprintf("final state of %s counts %d uses of token %s; the history has %d acknowledged and %d unknown",
					f.Server, t.Used, t.Ref, consumed[t.Key], maybe[t.Key])})
			}
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Detail < vs[j].Detail })
	return vs
}

// IndexSample is one status reading of a server.
type IndexSample struct {
	At      time.Duration `json:"at_ns"`
	State   string        `json:"state"`
	Term    uint64        `json:"term"`
	Commit  uint64        `json:"commit_index"`
	Applied uint64        `json:"applied_index"`
	LastLog uint64        `json:"last_log_index"`
}

// Isolation is the record of one isolation of a server from the others.
type Isolation struct {
	Server string        `json:"server"`
	Cut    time.Duration `json:"cut_ns"`
	Healed time.Duration `json:"healed_ns"`
	// Samples are the isolated server's status readings while it was cut
	// off; the first was taken after the cut.
	Samples []IndexSample `json:"samples"`
	// MajorityLeader is the server the others elected, and MajorityAcked
	// how many writes they acknowledged while it was cut off.
	MajorityLeader string `json:"majority_leader"`
	MajorityAcked  int    `json:"majority_acked"`
}

// CheckIsolation checks that an isolated server committed nothing while it
// was cut off: its commit and applied index never passed the commit index
// of its first reading after the cut, and it acknowledged no write and
// served no consistent read invoked after the cut and answered before the
// heal. It also checks that the isolation was real: the others elected a
// leader and acknowledged writes meanwhile.
func CheckIsolation(iso Isolation, ops []Op) []Violation {
	var vs []Violation
	name := "isolation of " + iso.Server
	if len(iso.Samples) < 2 {
		vs = append(vs, Violation{name, fmt.Sprintf("only %d status readings of the isolated server; the check needs two", len(iso.Samples))})
	} else {
		base := iso.Samples[0]
		for _, s := range iso.Samples[1:] {
			if s.Commit > base.Commit || s.Applied > max(base.Applied, base.Commit) {
				vs = append(vs, Violation{name, fmt.Sprintf("commit index moved from %d to %d (applied %d to %d) %s after the cut, while cut off",
					base.Commit, s.Commit, base.Applied, s.Applied, (s.At - iso.Cut).Round(time.Millisecond))})
				break
			}
		}
	}
	if iso.MajorityLeader == "" || iso.MajorityLeader == iso.Server {
		vs = append(vs, Violation{name, "the other servers elected no leader of their own"})
	}
	if iso.MajorityAcked == 0 {
		vs = append(vs, Violation{name, "the other servers acknowledged no write while it was cut off"})
	}
	for _, op := range ops {
		if op.Server != iso.Server || op.Outcome != OK || op.Call < iso.Cut || op.Return > iso.Healed {
			continue
		}
		// Both answers come from the state machine, after a commit; a
		// not_found may come from a local check before proposing.
		committed := op.Kind.IsWrite() && (op.Result == ResOK || op.Result == ResExists)
		consistent := op.Kind == OpReadRevocation || op.Kind == OpListRevocations
		if committed || consistent {
			vs = append(vs, Violation{name, fmt.Sprintf("it answered op %d (%s %s%s -> %s) while cut off",
				op.ID, op.Kind, op.Key, op.Ref, op.Result)})
		}
	}
	return vs
}

// Fault is one fault of the schedule.
type Fault struct {
	Kind   string `json:"kind"` // leader-kill, leader-stop, follower-kill, leader-isolation
	Server string `json:"server"`
	// At is when the fault began, Down when it had taken hold (the killed
	// process was reaped), Ended when it was undone (restart, SIGCONT,
	// heal), all since the recorder's start.
	At    time.Duration `json:"at_ns"`
	Down  time.Duration `json:"down_ns"`
	Ended time.Duration `json:"ended_ns"`
	// Failover is from At to the first acknowledged write invoked after
	// Down through another server; zero if there was none.
	Failover time.Duration `json:"failover_ns"`
	// NewLeader is who led after the fault.
	NewLeader string `json:"new_leader,omitempty"`
}

// Failover returns, for a fault on server that began at at and took hold
// at down, the time from at to the completion of the first write
// acknowledged through another server and invoked at or after down; false
// if there is none.
func Failover(ops []Op, server string, at, down time.Duration) (time.Duration, bool) {
	best, found := time.Duration(0), false
	for _, op := range ops {
		if !op.Acked() || op.Server == server || op.Call < down {
			continue
		}
		if d := op.Return - at; !found || d < best {
			best, found = d, true
		}
	}
	return best, found
}

// AgentFinal is what one node agent holds after the run, once its trust
// document reached the roots' final state index: the revocations of its
// persisted trust document (trust.json) and its answers, through its local
// API, for every token the load minted.
type AgentFinal struct {
	Agent       string          `json:"agent"`
	Index       uint64          `json:"index"`
	Revocations map[string]bool `json:"revocations,omitempty"`
	// Verifies maps a minted token's key to "valid" or the reason the
	// agent refused it.
	Verifies map[string]string `json:"verifies,omitempty"`
}

// CheckAgents checks the node agents against the history: each reached
// the roots' final index; every acknowledged revocation is in each agent's
// trust document; each refuses every minted token whose revocation was
// acknowledged and accepts every one nobody tried to revoke. lost counts
// the acknowledged revocations missing on some agent.
func CheckAgents(ops []Op, agents []AgentFinal, index uint64) (vs []Violation, lost int) {
	acked, invoked := map[string]bool{}, map[string]bool{}
	for _, op := range ops {
		if op.Kind != OpRevoke && op.Kind != OpProbe {
			continue
		}
		invoked[op.Key] = true
		if op.Outcome == OK && (op.Result == ResOK || op.Result == ResExists) {
			acked[op.Key] = true
		}
	}
	missing := map[string][]string{}
	for _, a := range agents {
		if a.Index < index {
			vs = append(vs, Violation{"agent", fmt.Sprintf("%s holds trust index %d, the roots are at %d", a.Agent, a.Index, index)})
		}
		for k := range acked {
			if !a.Revocations[k] {
				missing[k] = append(missing[k], a.Agent)
			}
		}
		keys := make([]string, 0, len(a.Verifies))
		for k := range a.Verifies {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch answer := a.Verifies[k]; {
			case acked[k] && answer == ResValid:
				vs = append(vs, Violation{"agent-verify", fmt.Sprintf("%s accepts %s after its revocation was acknowledged", a.Agent, k)})
			case !invoked[k] && answer != ResValid:
				vs = append(vs, Violation{"agent-verify", fmt.Sprintf("%s refuses %s (%s) though nobody revoked it", a.Agent, k, answer)})
			}
		}
	}
	return append(vs, missingWrites("lost-on-agent", "acknowledged revocation", missing)...), len(missing)
}
