package chaos

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	kmapi "github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session/gossip"
	"github.com/keymesh/keymesh/test/harness"
)

// bin is the keymesh binary built once for the whole package.
var bin string

func TestMain(m *testing.M) { harness.Main(m, &bin) }

// runConfig is TestChaos's configuration, from the environment:
//
//	CHAOS_FULL=1          the defaults of `make chaos`: 50 kills, 10m steady, 20m limit, failover p99 600ms
//	CHAOS_KILLS           leader kills (default 5; make chaos: 50)
//	CHAOS_STOPS           SIGSTOPs of the leader (default 1)
//	CHAOS_FOLLOWER_KILLS  kills of a follower (default 1)
//	CHAOS_ISOLATIONS      isolations of the leader behind the Raft proxies (default 1)
//	CHAOS_STEADY          steady load without faults first, no leader change allowed (default 12s; make chaos: 10m)
//	CHAOS_DURATION        time limit of the fault schedule (default 150s)
//	CHAOS_CLIENTS         load clients (default 6)
//	CHAOS_AGENTS          node agents (`keymesh node run` processes) following the roots (default 2)
//	CHAOS_RATE            operations per second over all clients (default 80)
//	CHAOS_TIMEOUT         client timeout of one operation (default 3s)
//	CHAOS_SEED            seed of the load and the schedule (default: from the clock; reported)
//	CHAOS_FAILOVER_P99    a leader-kill failover p99 above it is a violation (default none; make chaos: 600ms)
//	CHAOS_SERVER_FLAGS    extra flags for every root server, e.g. "--raft-heartbeat=500ms"
//	CHAOS_REPORT          where the JSON report goes (default test/chaos/report.json)
//	CHAOS_KEEP            directory that keeps the history and server logs (default: a new
//	                      temporary directory, only when the run fails)
//
// Relative paths are taken from the repository's root.
type runConfig struct {
	faults   FaultConfig
	steady   time.Duration
	duration time.Duration
	load     LoadConfig
	agents   int
	timeout  time.Duration
	p99      time.Duration
	flags    []string
	report   string
	keep     string
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration like 60s", name, v)
	}
	return d
}

func configFromEnv(t *testing.T) runConfig {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	rate := 80.0
	if v := os.Getenv("CHAOS_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			t.Fatalf("CHAOS_RATE=%q: want operations per second", v)
		}
		rate = r
	}
	kills, steady, limit, p99 := 5, 12*time.Second, 150*time.Second, time.Duration(0)
	if os.Getenv("CHAOS_FULL") == "1" {
		kills, steady, limit, p99 = 50, 10*time.Minute, 20*time.Minute, 600*time.Millisecond
	}
	c := runConfig{
		faults: FaultConfig{
			LeaderKills:   envInt(t, "CHAOS_KILLS", kills),
			LeaderStops:   envInt(t, "CHAOS_STOPS", 1),
			FollowerKills: envInt(t, "CHAOS_FOLLOWER_KILLS", 1),
			Isolations:    envInt(t, "CHAOS_ISOLATIONS", 1),
			Seed:          seed,
		},
		steady:   envDuration(t, "CHAOS_STEADY", steady),
		duration: envDuration(t, "CHAOS_DURATION", limit),
		load:     LoadConfig{Clients: envInt(t, "CHAOS_CLIENTS", 6), Rate: rate, Seed: seed},
		agents:   envInt(t, "CHAOS_AGENTS", 2),
		timeout:  envDuration(t, "CHAOS_TIMEOUT", 3*time.Second),
		p99:      envDuration(t, "CHAOS_FAILOVER_P99", p99),
		flags:    strings.Fields(os.Getenv("CHAOS_SERVER_FLAGS")),
		report:   os.Getenv("CHAOS_REPORT"),
		keep:     os.Getenv("CHAOS_KEEP"),
	}
	if c.report == "" {
		c.report = "test/chaos/report.json"
	}
	c.report, c.keep = fromRoot(c.report), fromRoot(c.keep)
	return c
}

// fromRoot resolves a relative path against the repository's root, where
// make runs, rather than this package's directory, where go test runs.
func fromRoot(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return path
	}
	return filepath.Join(filepath.Dir(file), "..", "..", path)
}

// TestChaos runs three root servers under load: first steady (no leader
// change allowed), then the fault schedule; then it checks the history and
// the final state and writes the report.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos run takes minutes; run it without -short")
	}
	cfg := configFromEnv(t)
	started := time.Now()
	// The schedule isolates a leader: the Raft proxies it needs are not
	// optional (harness.Start fails without them).
	c := harness.Start(t, bin, harness.Config{Servers: 3, RaftIPs: true, Proxies: true, Extra: cfg.flags})
	c.GossipAgents = true // the agents gossip, bulletins and all, through the faults
	c.StartAgents(cfg.agents)

	rec := NewRecorder(nil)
	keys := &Keys{}
	keys.SetMinter(minter(t, c))
	if len(c.Agents) > 0 {
		cfg.load.Actions = append(DefaultActions(), Weighted{VerifyAtAgent{Agents: agentVerifiers(t, c)}, 5})
	}
	target := NewClusterTarget(c, cfg.timeout)
	defer target.Close()
	load, err := StartLoad(cfg.load, target, rec, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	run := &Runner{T: t, C: c, Rec: rec, Keys: keys, Target: target, Cfg: cfg.faults}
	rep := &Report{Started: started, HistoryStart: rec.Start().UTC(), Seed: cfg.load.Seed, Servers: len(c.Roots), Clients: cfg.load.Clients, Rate: cfg.load.Rate, Proxies: c.Net != nil,
		Machine: Machine{CPUs: runtime.NumCPU(), LoadStart: LoadAverage()}}

	if cfg.steady > 0 {
		t.Run("steady", func(t *testing.T) {
			run.T = t
			s := run.Steady(cfg.steady)
			rep.Steady = &s
			if s.LeaderChanges > 0 {
				t.Errorf("%d leader or term changes in %s of steady load: %v", s.LeaderChanges, cfg.steady, s.Changes)
			}
		})
	}
	t.Run("faults", func(t *testing.T) {
		run.T = t
		run.Run(cfg.faults.Schedule(), time.Now().Add(cfg.duration))
	})
	run.T = t
	load.Stop()

	// Should the final reads fail the test, keep what there is.
	done := false
	defer func() {
		if !done {
			rep.Counts, rep.FaultLog, rep.Violations = Count(rec.Ops()), run.Faults, run.Violations
			rep.Kept = keep(t, cfg.keep, c, rec.Ops(), rep)
			if err := rep.WriteJSON(cfg.report); err != nil {
				t.Errorf("write the report: %v", err)
			}
			t.Logf("the run stopped before its checks; history kept in %s", rep.Kept)
		}
	}()
	finals := finalState(t, c, rec)
	ops := rec.Ops()
	rep.Counts = Count(ops)
	rep.FaultLog, rep.Isolations, rep.Skipped = run.Faults, run.Isolations, run.Skipped
	rep.Latencies()
	rep.SetFinals(finals)
	if len(finals) > 0 {
		rep.StateHash = finals[0].StateHash
	}
	vs := append([]Violation(nil), run.Violations...)
	rep.Linear = true
	for _, m := range Models() {
		v := m.Check(ops, 2*time.Minute)
		rep.Verdicts = append(rep.Verdicts, v)
		if v.Result != VerdictOK {
			rep.Linear = false
			vs = append(vs, Violation{"linearizability", fmt.Sprintf("%s: %s in partition %q", v.Model, v.Result, v.Partition)})
		}
	}
	fvs, lost := CheckFinal(ops, finals)
	rep.Lost = lost
	vs = append(vs, fvs...)
	agents := finalAgents(t, c, finals[0].AppliedIndex, keys.Minted())
	avs, agentLost := CheckAgents(ops, agents, finals[0].AppliedIndex)
	rep.LostOnAgents = agentLost
	rep.SetAgents(agents)
	vs = append(vs, avs...)
	vs = append(vs, CheckVerifies(ops)...)
	vs = append(vs, finalVerifies(t, c, ops, keys.Minted())...)
	vs = append(vs, CheckTokenUses(ops, finals)...)
	vs = append(vs, CheckSerials(finals)...)
	for _, iso := range run.Isolations {
		vs = append(vs, CheckIsolation(iso, ops)...)
	}
	if n := rep.Faults[LeaderKill]; n < cfg.faults.LeaderKills {
		vs = append(vs, Violation{"schedule", fmt.Sprintf("%d leader kills made, %d asked", n, cfg.faults.LeaderKills)})
	}
	if cfg.p99 > 0 && rep.Failover.P99 > ms(cfg.p99) {
		vs = append(vs, Violation{"failover", fmt.Sprintf("p99 %.0fms over %d leader kills exceeds %s", rep.Failover.P99, rep.Failover.Count, cfg.p99)})
	}
	rep.Violations = vs
	rep.Pass = len(vs) == 0 && !t.Failed()
	rep.Seconds = time.Since(started).Seconds()
	rep.Machine.LoadEnd = LoadAverage()
	if !rep.Pass || cfg.keep != "" {
		rep.Kept = keep(t, cfg.keep, c, ops, rep)
	}
	done = true
	if err := rep.WriteJSON(cfg.report); err != nil {
		t.Errorf("write the report: %v", err)
	}
	t.Logf("report in %s", cfg.report)
	fmt.Print(rep.Summary())
	for _, v := range vs {
		t.Errorf("%s", v)
	}
}

// finalState heals and restarts everything, waits until every server has
// applied the same log, and reads every server's state: a consistent list
// of the revocations (recorded in the history as a read of every key
// written), a local one, the load's join tokens and registrations; and one
// read of the token table for the history, linearizable because nothing
// writes any more.
func finalState(t *testing.T, c *harness.Cluster, rec *Recorder) []Final {
	t.Helper()
	if c.Net != nil {
		c.Net.Heal()
	}
	for _, r := range c.Roots {
		if r.Running() {
			c.Cont(r)
		} else {
			c.Restart(r)
		}
	}
	c.WaitConverged(60 * time.Second)
	target := NewClusterTarget(c, 15*time.Second)
	defer target.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	written := WrittenKeys(rec.Ops())
	var finals []Final
	for _, r := range c.Roots {
		f := Final{Server: r.Name, Consistent: map[string]bool{}, Local: map[string]bool{}, Tokens: map[string]TokenView{}, Nodes: map[string]NodeView{}}
		api, err := target.API(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		// A consistent list of each kind goes into the history as a read
		// of every key ever written, so that the model can keep keys apart.
		call := rec.Now()
		revs, err := api.Revocations(ctx, "", true)
		ret := rec.Now()
		if err != nil {
			t.Fatalf("consistent list of revocations through %s: %v", r.Name, err)
		}
		for _, rv := range revs {
			f.Consistent[string(rv.Kind)+"/"+rv.ID] = true
		}
		RecordReads(rec, r.Name, written, f.Consistent, call, ret)
		local, err := api.Revocations(ctx, "", false)
		if err != nil {
			t.Fatalf("local list through %s: %v", r.Name, err)
		}
		for _, rv := range local {
			f.Local[string(rv.Kind)+"/"+rv.ID] = true
		}
		toks, err := api.JoinTokens(ctx)
		if err != nil {
			t.Fatalf("join tokens of %s: %v", r.Name, err)
		}
		for _, tv := range tokenViews(toks) {
			f.Tokens[tv.Key] = tv
		}
		regs, err := api.Registrations(ctx, "", true)
		if err != nil {
			t.Fatalf("registrations through %s: %v", r.Name, err)
		}
		for _, n := range nodeViews(regs) {
			f.Nodes[n.Node] = n
		}
		finals = append(finals, f)
	}
	// The state hashes are compared at one applied index: a leader's own
	// writes (a gossip key rotation's later steps after the load's node
	// revocations, pruning) may land while the lists above are read.
	for try := 0; ; try++ {
		c.WaitConverged(60 * time.Second)
		same := true
		for i, r := range c.Roots {
			st, err := c.StatusOf(ctx, r)
			if err != nil {
				t.Fatalf("status of %s: %v", r.Name, err)
			}
			finals[i].StateHash, finals[i].AppliedIndex = st.StateHash, st.AppliedIndex
			same = same && st.AppliedIndex == finals[0].AppliedIndex
		}
		if same || try == 10 {
			break // at try 10, CheckFinal reports what differs
		}
	}
	id := rec.Begin(Op{Kind: OpTokenRead, Client: FinalClient, Server: c.Roots[0].Name})
	views := []TokenView{}
	for _, tv := range finals[0].Tokens {
		views = append(views, tv)
	}
	rec.End(id, Op{Server: c.Roots[0].Name, Outcome: OK, Result: ResOK, Tokens: views})
	return finals
}

// finalAgents reads every node agent once the roots have converged at
// index: the first agent is killed and started again first, so that it
// resumes from its persisted trust document. Each agent's trust.json must
// reach index; then its revocations are read from it and every minted token
// is verified through the agent's local API.
func finalAgents(t *testing.T, c *harness.Cluster, index uint64, minted map[string]string) []AgentFinal {
	t.Helper()
	if len(c.Agents) == 0 {
		return nil
	}
	c.KillAgent(c.Agents[0])
	c.RestartAgent(c.Agents[0])
	// The gossip holds through the faults and the restart: every agent's
	// graph has every other alive.
	for _, a := range c.Agents {
		for _, o := range c.Agents {
			c.WaitMember(a, o.Name, time.Minute, gossip.StateAlive)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	aud := agent.Audience{kmapi.Audience(c.Network)}
	var out []AgentFinal
	for _, a := range c.Agents {
		if !a.Running() {
			t.Fatalf("agent %s is not running:\n%s", a.Name, a.Log())
		}
		var doc trust.Delta
		deadline := time.Now().Add(30 * time.Second)
		for {
			var err error
			doc, err = agent.ReadTrustFile(a.Dir, c.Network)
			if err == nil && doc.Index >= index {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %s: trust.json at index %d (error %v) 30s after the roots converged at %d", a.Name, doc.Index, err, index)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		f := AgentFinal{Agent: a.Name, Index: doc.Index, Revocations: map[string]bool{}, Verifies: map[string]string{}}
		for _, rv := range doc.Put.Revocations {
			f.Revocations[string(rv.Kind)+"/"+rv.ID] = true
		}
		lc := agent.NewLocalClient(a.Socket())
		for jti, tok := range minted {
			v, err := lc.Verify(ctx, agent.VerifyRequest{Token: tok, Audience: aud})
			if err != nil {
				t.Fatalf("verify through agent %s: %v", a.Name, err)
			}
			answer := ResValid
			if !v.Valid {
				answer = v.Reason
			}
			f.Verifies[MintedKey(jti)] = answer
		}
		lc.Close()
		out = append(out, f)
	}
	return out
}

// keep writes the history, the report, the servers' logs and the view of
// any failing model into dir (a new temporary directory when empty) and
// returns it.
func keep(t *testing.T, dir string, c *harness.Cluster, ops []Op, rep *Report) string {
	t.Helper()
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "keymesh-chaos-"); err != nil {
			t.Errorf("keep the history: %v", err)
			return ""
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("keep the history: %v", err)
		return ""
	}
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err == nil {
		err = WriteHistory(f, ops)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Errorf("write the history: %v", err)
	}
	for _, r := range c.Roots {
		if err := os.WriteFile(filepath.Join(dir, r.Name+".log"), []byte(r.Log()), 0o644); err != nil {
			t.Errorf("keep the log of %s: %v", r.Name, err)
		}
	}
	for _, a := range c.Agents {
		if err := os.WriteFile(filepath.Join(dir, a.Name+".log"), []byte(a.Log()), 0o644); err != nil {
			t.Errorf("keep the log of %s: %v", a.Name, err)
		}
	}
	if len(rep.Finals) > 0 {
		b, err := json.Marshal(rep.Finals)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "finals.json"), b, 0o644)
		}
		if err != nil {
			t.Errorf("keep the final states: %v", err)
		}
	}
	for _, v := range rep.Verdicts {
		if v.Result == VerdictViolation {
			if err := v.Visualize(filepath.Join(dir, v.Model+".html")); err != nil {
				t.Errorf("visualize %s: %v", v.Model, err)
			}
		}
	}
	return dir
}

// TestRecheck checks a kept history again, with the final states kept
// next to it (finals.json) when there are: CHAOS_HISTORY names its
// history.jsonl. Without it the test is skipped.
func TestRecheck(t *testing.T) {
	path := fromRoot(os.Getenv("CHAOS_HISTORY"))
	if path == "" {
		t.Skip("set CHAOS_HISTORY to a kept history.jsonl to check it again")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ops, err := ReadHistory(f)
	if err != nil {
		t.Fatal(err)
	}
	var finals []Final
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "finals.json")); err == nil {
		if err := json.Unmarshal(b, &finals); err != nil {
			t.Fatalf("finals.json: %v", err)
		}
		vs, lost := CheckFinal(ops, finals)
		vs = append(vs, CheckTokenUses(ops, finals)...)
		vs = append(vs, CheckSerials(finals)...)
		vs = append(vs, CheckVerifies(ops)...)
		t.Logf("final states of %d servers: %d violations, %d lost", len(finals), len(vs), lost)
		for _, v := range vs {
			t.Errorf("%s", v)
		}
	}
	for _, m := range Models() {
		v := m.Check(ops, 2*time.Minute)
		t.Logf("%s: %s (%d ops, %d partitions, %d open, %d dropped, %s)", v.Model, v.Result, v.Ops, v.Partitions, v.Open, v.Dropped, v.Elapsed)
		if v.Result != VerdictOK {
			out := filepath.Join(filepath.Dir(path), v.Model+".html")
			if err := v.Visualize(out); err == nil {
				t.Logf("view in %s", out)
			}
			t.Errorf("%s: %s in partition %q", v.Model, v.Result, v.Partition)
		}
	}
}

// minter mints the tokens the load verifies and revokes: in turn with r1's
// admin credential and through each node agent's local API (under the
// node's own key), all for the root API's audience.
func minter(t *testing.T, c *harness.Cluster) func() (string, string, error) {
	t.Helper()
	mints := []func() (string, string, error){adminMinter(t, c)}
	aud := agent.Audience{kmapi.Audience(c.Network)}
	for _, a := range c.Agents {
		lc := agent.NewLocalClient(a.Socket())
		t.Cleanup(lc.Close)
		mints = append(mints, func() (string, string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := lc.Mint(ctx, agent.MintRequest{Audience: aud, TTL: "1h"})
			if err != nil {
				return "", "", err
			}
			var claims struct {
				JTI string `json:"jti"`
			}
			if err := json.Unmarshal(resp.Claims, &claims); err != nil || claims.JTI == "" {
				return "", "", fmt.Errorf("agent %s minted a token without a jti: %v", a.Name, err)
			}
			return resp.Token, claims.JTI, nil
		})
	}
	var n atomic.Uint64
	return func() (string, string, error) {
		return mints[(n.Add(1)-1)%uint64(len(mints))]()
	}
}

// agentVerifiers are the local verify calls of the cluster's node agents,
// for the root API's audience.
func agentVerifiers(t *testing.T, c *harness.Cluster) []AgentVerifier {
	t.Helper()
	aud := agent.Audience{kmapi.Audience(c.Network)}
	var out []AgentVerifier
	for _, a := range c.Agents {
		lc := agent.NewLocalClient(a.Socket())
		t.Cleanup(lc.Close)
		out = append(out, AgentVerifier{Name: a.Name, Verify: func(ctx context.Context, token string) (bool, string, error) {
			v, err := lc.Verify(ctx, agent.VerifyRequest{Token: token, Audience: aud})
			return v.Valid, v.Reason, err
		}})
	}
	return out
}

// adminMinter mints ADMIN tokens for the root API with r1's admin
// credential (its key is in the JWKS): the tokens the load verifies and
// revokes.
func adminMinter(t *testing.T, c *harness.Cluster) func() (string, string, error) {
	t.Helper()
	cred, err := ca.LoadCredential(c.Credential())
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range cred.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	m, err := identity.NewMinter(identity.MinterConfig{Key: cred.PrivateKey.(crypto.Signer), Cert: chain[0], Chain: chain,
		Principals: []identity.Principal{identity.PrincipalAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	aud := []string{kmapi.Audience(c.Network)}
	return func() (string, string, error) {
		tok, claims, err := m.Mint(identity.MintRequest{Audience: aud, TTL: time.Hour, Principal: identity.PrincipalAdmin})
		return tok, claims.ID, err
	}
}

// finalVerifies asks every root, once all have applied the same log, about
// every token the load minted: one whose revocation was acknowledged is
// refused everywhere, one nobody tried to revoke verifies everywhere.
func finalVerifies(t *testing.T, c *harness.Cluster, ops []Op, minted map[string]string) []Violation {
	t.Helper()
	acked, invoked := map[string]bool{}, map[string]bool{}
	for _, op := range ops {
		if op.Kind == OpRevoke {
			invoked[op.Key] = true
			acked[op.Key] = acked[op.Key] || op.Outcome == OK && (op.Result == ResOK || op.Result == ResExists)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var vs []Violation
	for _, r := range c.Roots {
		cl, err := c.NewClient(r, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for jti, tok := range minted {
			v, err := cl.Verify(ctx, tok, "")
			if err != nil {
				t.Fatalf("verify through %s: %v", r.Name, err)
			}
			key := MintedKey(jti)
			switch {
			case acked[key] && v.Valid:
				vs = append(vs, Violation{"verify", fmt.Sprintf("%s accepts %s after its revocation was acknowledged", r.Name, key)})
			case !invoked[key] && !v.Valid:
				vs = append(vs, Violation{"verify", fmt.Sprintf("%s refuses %s (%s) though nobody revoked it", r.Name, key, v.Reason)})
			}
		}
		cl.Close()
	}
	return vs
}
