package chaos

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Latency summarises durations in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Percentiles summarises ds by nearest rank.
func Percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return Latency{Count: len(s), P50: rank(0.50), P99: rank(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// Counts are the operations of a history by outcome.
type Counts struct {
	Operations   int `json:"operations"`
	Writes       int `json:"writes"`
	Acknowledged int `json:"acknowledged"` // writes acknowledged as done
	Rejected     int `json:"rejected"`     // writes answered with a definite rejection (exists, not_found, ...)
	Unknown      int `json:"unknown"`      // writes of unknown outcome
	Failed       int `json:"failed"`       // operations that certainly had no effect
	Reads        int `json:"reads"`        // reads that answered
	// ByKind counts operations by kind and by answer (the result of a
	// definite answer, else the outcome).
	ByKind map[OpKind]map[string]int `json:"by_kind"`
}

// Count counts ops.
func Count(ops []Op) Counts {
	c := Counts{ByKind: map[OpKind]map[string]int{}}
	c.Operations = len(ops)
	for _, op := range ops {
		if c.ByKind[op.Kind] == nil {
			c.ByKind[op.Kind] = map[string]int{}
		}
		answer := string(op.Outcome)
		if op.Outcome == OK {
			answer = op.Result
		}
		c.ByKind[op.Kind][answer]++
		w := op.Kind.IsWrite()
		if w {
			c.Writes++
		}
		switch {
		case op.Outcome == Fail:
			c.Failed++
		case w && op.Outcome == OK && op.Result == ResOK:
			c.Acknowledged++
		case w && op.Outcome == OK:
			c.Rejected++
		case w:
			c.Unknown++
		default:
			c.Reads++
		}
	}
	return c
}

// Report is the result of one chaos run.
type Report struct {
	Pass    bool      `json:"pass"`
	Started time.Time `json:"started"`
	// HistoryStart is the wall-clock time the history's times count from,
	// to find an operation or a fault in the servers' logs.
	HistoryStart time.Time `json:"history_start"`
	Seconds      float64   `json:"seconds"`
	Seed         uint64    `json:"seed"`
	Servers      int       `json:"servers"`
	Clients      int       `json:"clients"`
	Rate         float64   `json:"rate_ops_per_s"`
	Proxies      bool      `json:"raft_proxies"`
	// Machine is the host's CPU count and load average (1, 5, 15 minutes)
	// at the start and the end: other work on the host slows the servers.
	Machine Machine `json:"machine"`
	Counts  `json:"ops"`
	Lost    int `json:"lost"`
	// LostOnAgents counts acknowledged revocations missing on some node
	// agent; Agents are the agents' final states.
	LostOnAgents int            `json:"lost_on_agents"`
	Agents       []AgentState   `json:"agents,omitempty"`
	Faults       map[string]int `json:"faults"`
	Skipped      []string       `json:"skipped,omitempty"`
	Steady       *Steady        `json:"steady,omitempty"`
	Linear       bool           `json:"linearizable"`
	Verdicts     []Verdict      `json:"verdicts"`
	// Failover is kill of the leader to the first acknowledged write
	// through a survivor, over every leader kill; StopFailover and
	// IsolationFailover the same for the other leader faults, and
	// FollowerKill for the kills of a follower.
	Failover          Latency     `json:"failover"`
	StopFailover      Latency     `json:"stop_failover"`
	IsolationFailover Latency     `json:"isolation_failover"`
	FollowerKill      Latency     `json:"follower_kill_write"`
	FaultLog          []Fault     `json:"fault_log"`
	Isolations        []Isolation `json:"isolations,omitempty"`
	StateHash         string      `json:"state_hash"`
	Finals            []Final     `json:"-"`
	States            []State     `json:"finals"`
	Violations        []Violation `json:"violations"`
	// Kept names the directory with the history (and the linearizability
	// view of a failing model), kept when the run failed.
	Kept string `json:"kept,omitempty"`
}

// State is a server's final state as the report shows it.
type State struct {
	Server       string `json:"server"`
	StateHash    string `json:"state_hash"`
	AppliedIndex uint64 `json:"applied_index"`
	Revocations  int    `json:"revocations"`
	Tokens       int    `json:"tokens"`
	Nodes        int    `json:"nodes"`
}

// AgentState is a node agent's final state as the report shows it.
type AgentState struct {
	Agent       string `json:"agent"`
	Index       uint64 `json:"trust_index"`
	Revocations int    `json:"revocations"`
	Verified    int    `json:"tokens_checked"`
}

// SetAgents keeps the agents' summary.
func (r *Report) SetAgents(as []AgentFinal) {
	r.Agents = nil
	for _, a := range as {
		r.Agents = append(r.Agents, AgentState{Agent: a.Agent, Index: a.Index, Revocations: len(a.Revocations), Verified: len(a.Verifies)})
	}
}

// SetFinals keeps the finals and their summary.
func (r *Report) SetFinals(fs []Final) {
	r.Finals, r.States = fs, nil
	for _, f := range fs {
		r.States = append(r.States, State{Server: f.Server, StateHash: f.StateHash, AppliedIndex: f.AppliedIndex,
			Revocations: len(f.Consistent), Tokens: len(f.Tokens), Nodes: len(f.Nodes)})
	}
}

// Machine describes the host of a run.
type Machine struct {
	CPUs      int    `json:"cpus"`
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// LoadAverage returns the first three fields of /proc/loadavg, or "" where
// there is none.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Latencies fills the failover summaries from the fault log.
func (r *Report) Latencies() {
	by := map[string][]time.Duration{}
	r.Faults = map[string]int{}
	for _, f := range r.FaultLog {
		r.Faults[f.Kind]++
		if f.Failover > 0 {
			by[f.Kind] = append(by[f.Kind], f.Failover)
		}
	}
	r.Failover = Percentiles(by[LeaderKill])
	r.StopFailover = Percentiles(by[LeaderStop])
	r.IsolationFailover = Percentiles(by[LeaderIsolation])
	r.FollowerKill = Percentiles(by[FollowerKill])
}

// Summary is the short text report.
func (r *Report) Summary() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "chaos %s: %d servers, %d clients at %.0f ops/s, %.0fs, seed %d; host %d CPUs, load %s -> %s\n",
		verdict, r.Servers, r.Clients, r.Rate, r.Seconds, r.Seed, r.Machine.CPUs, orNone(r.Machine.LoadStart), orNone(r.Machine.LoadEnd))
	kinds := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var fs []string
	for _, k := range kinds {
		fs = append(fs, fmt.Sprintf("%d %s", r.Faults[k], k))
	}
	fmt.Fprintf(&b, "faults: %s\n", orNone(strings.Join(fs, ", ")))
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "skipped: %s\n", s)
	}
	fmt.Fprintf(&b, "operations %d: acknowledged writes %d, rejected %d, unknown %d, failed %d, reads %d; lost %d\n",
		r.Operations, r.Acknowledged, r.Rejected, r.Unknown, r.Failed, r.Reads, r.Lost)
	if len(r.Agents) > 0 {
		var as []string
		for _, a := range r.Agents {
			as = append(as, fmt.Sprintf("%s at index %d, %d revocations, %d tokens checked", a.Agent, a.Index, a.Revocations, a.Verified))
		}
		fmt.Fprintf(&b, "node agents: %s; acknowledged revocations missing on an agent: %d\n", strings.Join(as, "; "), r.LostOnAgents)
	}
	var vs []string
	for _, v := range r.Verdicts {
		vs = append(vs, fmt.Sprintf("%s %s (%d ops, %d parts, %d open, %s)", v.Model, v.Result, v.Ops, v.Partitions, v.Open, v.Elapsed.Round(time.Millisecond)))
	}
	fmt.Fprintf(&b, "linearizable: %v: %s\n", r.Linear, strings.Join(vs, "; "))
	fmt.Fprintf(&b, "failover over %d leader kills: p50 %.0fms p99 %.0fms max %.0fms\n", r.Failover.Count, r.Failover.P50, r.Failover.P99, r.Failover.Max)
	if r.StopFailover.Count+r.IsolationFailover.Count+r.FollowerKill.Count > 0 {
		fmt.Fprintf(&b, "leader stop: max %.0fms (%d); leader isolation: max %.0fms (%d); follower kill: max %.0fms (%d)\n",
			r.StopFailover.Max, r.StopFailover.Count, r.IsolationFailover.Max, r.IsolationFailover.Count, r.FollowerKill.Max, r.FollowerKill.Count)
	}
	if r.Steady != nil {
		fmt.Fprintf(&b, "steady %s: %d leader changes (leader %s, term %d, %d writes acknowledged)\n",
			r.Steady.Duration, r.Steady.LeaderChanges, r.Steady.Leader, r.Steady.Term, r.Steady.Acked)
	}
	for i, v := range r.Violations {
		if i == 20 {
			fmt.Fprintf(&b, "... and %d more violations\n", len(r.Violations)-20)
			break
		}
		fmt.Fprintf(&b, "VIOLATION %s\n", v)
	}
	if r.Kept != "" {
		fmt.Fprintf(&b, "history kept in %s\n", r.Kept)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// WriteJSON writes the report to path, making its directory.
func (r *Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
