package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kmapi "github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/test/harness"
)

// ClusterTarget is a Target backed by a harness cluster, with one client
// per server shared by every load client.
type ClusterTarget struct {
	c       *harness.Cluster
	timeout time.Duration
	names   []string
	roots   map[string]*harness.Root

	mu      sync.Mutex
	clients map[string]*client.Client
}

// NewClusterTarget makes a Target of the servers c has now; every call
// through it times out after timeout.
func NewClusterTarget(c *harness.Cluster, timeout time.Duration) *ClusterTarget {
	t := &ClusterTarget{c: c, timeout: timeout, roots: map[string]*harness.Root{}, clients: map[string]*client.Client{}}
	for _, r := range c.Roots {
		t.names = append(t.names, r.Name)
		t.roots[r.Name] = r
	}
	return t
}

// Servers implements Target.
func (t *ClusterTarget) Servers() []string { return t.names }

// Up implements Target.
func (t *ClusterTarget) Up(name string) bool {
	r, ok := t.roots[name]
	return ok && r.Running()
}

// API implements Target.
func (t *ClusterTarget) API(name string) (API, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cl, ok := t.clients[name]; ok {
		return cl, nil
	}
	r, ok := t.roots[name]
	if !ok {
		return nil, fmt.Errorf("chaos: no server %q", name)
	}
	cl, err := t.c.NewClient(r, t.timeout)
	if err != nil {
		return nil, err
	}
	t.clients[name] = cl
	return cl, nil
}

// Close closes the clients.
func (t *ClusterTarget) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, cl := range t.clients {
		cl.Close()
	}
}

// FaultConfig is the schedule of faults and its pace.
type FaultConfig struct {
	// LeaderKills, LeaderStops, FollowerKills and Isolations are how many
	// of each fault to make.
	LeaderKills, LeaderStops, FollowerKills, Isolations int
	// DwellWrites is how many writes the cluster must acknowledge after a
	// fault is undone before the next one; default 20.
	DwellWrites int
	// DwellMax bounds that wait; not reaching DwellWrites within it is a
	// liveness violation. Default 15s.
	DwellMax time.Duration
	// StopFor is how long a stopped leader stays stopped; it must exceed
	// the election timeout. Default 1.5s.
	StopFor time.Duration
	// IsolateFor is how long an isolated leader stays cut off; default 2s.
	IsolateFor time.Duration
	// Recover bounds every wait for a leader, a failover or a catch-up;
	// default 30s.
	Recover time.Duration
	// Seed orders the schedule.
	Seed uint64
}

func (c FaultConfig) withDefaults() FaultConfig {
	if c.DwellWrites == 0 {
		c.DwellWrites = 20
	}
	if c.DwellMax == 0 {
		c.DwellMax = 15 * time.Second
	}
	if c.StopFor == 0 {
		c.StopFor = 1500 * time.Millisecond
	}
	if c.IsolateFor == 0 {
		c.IsolateFor = 2 * time.Second
	}
	if c.Recover == 0 {
		c.Recover = 30 * time.Second
	}
	return c
}

// Fault kinds.
const (
	LeaderKill      = "leader-kill"
	LeaderStop      = "leader-stop"
	FollowerKill    = "follower-kill"
	LeaderIsolation = "leader-isolation"
)

// Schedule orders the faults of c: the other faults spread evenly among
// the leader kills.
func (c FaultConfig) Schedule() []string {
	others := []string{}
	for range c.LeaderStops {
		others = append(others, LeaderStop)
	}
	for range c.FollowerKills {
		others = append(others, FollowerKill)
	}
	for range c.Isolations {
		others = append(others, LeaderIsolation)
	}
	rng := rand.New(rand.NewPCG(c.Seed, 1))
	rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	var out []string
	n := c.LeaderKills + len(others)
	placed := 0
	for i := range n {
		// Place other fault k after about (k+1)/(len+1) of the run.
		if placed < len(others) && (i+1)*(len(others)+1) >= (placed+1)*n {
			out = append(out, others[placed])
			placed++
			continue
		}
		out = append(out, LeaderKill)
	}
	return out
}

// Runner makes faults against a harness cluster while a load runs, and
// keeps their record.
type Runner struct {
	T      testing.TB
	C      *harness.Cluster
	Rec    *Recorder
	Keys   *Keys
	Target *ClusterTarget
	Cfg    FaultConfig

	Faults     []Fault
	Isolations []Isolation
	Violations []Violation
	Skipped    []string
}

// ProbeClient is the first client id of failover probes; the checker's own
// reads use FinalClient.
const (
	ProbeClient = 1000
	FinalClient = -1
)

// Run makes the faults of sched in order, or stops at deadline with a
// violation.
func (r *Runner) Run(sched []string, deadline time.Time) {
	r.Cfg = r.Cfg.withDefaults()
	for i, kind := range sched {
		if time.Now().After(deadline) {
			r.violate("schedule", fmt.Sprintf("ran out of time after %d of %d faults", i, len(sched)))
			return
		}
		r.dwell()
		switch kind {
		case LeaderKill:
			r.leaderKill()
		case LeaderStop:
			r.leaderStop()
		case FollowerKill:
			r.followerKill()
		case LeaderIsolation:
			r.leaderIsolation()
		}
	}
	r.dwell()
}

func (r *Runner) violate(check, detail string) {
	r.T.Logf("VIOLATION %s: %s", check, detail)
	r.Violations = append(r.Violations, Violation{check, detail})
}

// dwell lets the load run until the cluster has acknowledged DwellWrites
// more writes.
func (r *Runner) dwell() {
	base := r.Rec.Acked()
	want := base + int64(r.Cfg.DwellWrites)
	start := time.Now()
	for r.Rec.Acked() < want {
		if time.Since(start) > r.Cfg.DwellMax {
			r.violate("liveness", fmt.Sprintf("only %d writes acknowledged in %s after recovery (want %d)",
				r.Rec.Acked()-base, r.Cfg.DwellMax, r.Cfg.DwellWrites))
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// status asks r for its status within a second.
func (r *Runner) status(root *harness.Root) (kmapi.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return r.C.StatusOf(ctx, root)
}

// statuses asks every running server but skip, in parallel.
func (r *Runner) statuses(skip *harness.Root) map[*harness.Root]kmapi.Status {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[*harness.Root]kmapi.Status{}
	for _, root := range r.C.Running() {
		if root == skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := r.status(root); err == nil {
				mu.Lock()
				out[root] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// leader waits until a majority of all servers (not asking skip) name the
// same server as leader in the same term, and that server says it leads.
func (r *Runner) leader(skip *harness.Root) (*harness.Root, kmapi.Status) {
	r.T.Helper()
	deadline := time.Now().Add(r.Cfg.Recover)
	quorum := len(r.C.Roots)/2 + 1
	var last map[*harness.Root]kmapi.Status
	for time.Now().Before(deadline) {
		last = r.statuses(skip)
		for root, st := range last {
			if st.State != "Leader" {
				continue
			}
			votes := 0
			for _, o := range last {
				if o.Leader == root.Name && o.Term == st.Term {
					votes++
				}
			}
			if votes >= quorum {
				return root, st
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	var b []string
	for root, st := range last {
		b = append(b, fmt.Sprintf("%s: %s term %d leader %q", root.Name, st.State, st.Term, st.Leader))
	}
	sort.Strings(b)
	r.T.Fatalf("no leader agreed by a majority within %s: %v", r.Cfg.Recover, b)
	return nil, kmapi.Status{}
}

// probeEvery is how often the failover probe starts another write through
// each server while earlier ones are still waiting: a write forwarded to a
// leader that froze may wait for its client's timeout, and the probe
// measures when the cluster can take writes again, not that timeout.
const probeEvery = 100 * time.Millisecond

// probe sends fresh revocations through each of servers, a new one every
// probeEvery, until one is acknowledged; it waits for the writes in flight
// to end and reports whether one was acknowledged. Each write is its own
// client in the history (ProbeClient and up).
func (r *Runner) probe(servers []*harness.Root) bool {
	deadline := time.Now().Add(r.Cfg.Recover)
	var done atomic.Bool
	var wg sync.WaitGroup
	for i, root := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(probeEvery)
			defer tick.Stop()
			ended := make(chan struct{}, 1)
			for n := 0; n < 1000 && !done.Load() && time.Now().Before(deadline); n++ {
				client := ProbeClient + 1000*i + n
				wg.Add(1)
				go func() {
					defer wg.Done()
					op, _ := Run(context.Background(), probeAction{}, r.Target, root.Name, client, nil, r.Keys, r.Rec)
					if op.Acked() {
						done.Store(true)
					}
					select {
					case ended <- struct{}{}:
					default:
					}
				}()
				select {
				case <-tick.C:
				case <-ended:
					time.Sleep(5 * time.Millisecond) // pace retries against a refusing server
				}
			}
		}()
	}
	wg.Wait()
	return done.Load()
}

// probeAction is the failover probe's write: a fresh revocation.
type probeAction struct{}

func (probeAction) Kind() OpKind { return OpProbe }
func (probeAction) Prepare(_ *rand.Rand, keys *Keys) Op {
	return Op{Key: keys.NewRevocation("token")}
}
func (probeAction) Do(ctx context.Context, api API, op Op) (Op, error) { return doRevoke(ctx, api, op) }

// others lists the servers but x.
func (r *Runner) others(x *harness.Root) []*harness.Root {
	var out []*harness.Root
	for _, root := range r.C.Roots {
		if root != x {
			out = append(out, root)
		}
	}
	return out
}

// catchUp waits until root has applied what the leader has committed.
func (r *Runner) catchUp(root *harness.Root) {
	r.T.Helper()
	_, st := r.leader(nil)
	r.C.WaitCaughtUp(root, st.CommitIndex, r.Cfg.Recover)
}

// record fills in the failover of f from the history and keeps f. A
// missing failover is a violation unless one was reported already.
func (r *Runner) record(f Fault, reported bool) {
	if d, ok := Failover(r.Rec.Ops(), f.Server, f.At, f.Down); ok {
		f.Failover = d
	} else if !reported {
		r.violate(f.Kind, fmt.Sprintf("no write acknowledged through the other servers after the %s of %s", f.Kind, f.Server))
	}
	r.Faults = append(r.Faults, f)
	r.T.Logf("%s %s: failover %s, new leader %s", f.Kind, f.Server, f.Failover.Round(time.Millisecond), f.NewLeader)
}

func (r *Runner) leaderKill() {
	r.T.Helper()
	victim, _ := r.leader(nil)
	f := Fault{Kind: LeaderKill, Server: victim.Name, At: r.Rec.Now()}
	r.C.Kill(victim)
	f.Down = r.Rec.Now()
	ok := r.probe(r.others(victim))
	if !ok {
		r.violate(LeaderKill, fmt.Sprintf("no write acknowledged within %s after killing leader %s", r.Cfg.Recover, victim.Name))
	}
	leader, _ := r.leader(victim)
	f.NewLeader = leader.Name
	r.C.Restart(victim)
	f.Ended = r.Rec.Now()
	r.record(f, !ok)
	r.catchUp(victim)
}

func (r *Runner) followerKill() {
	r.T.Helper()
	leader, _ := r.leader(nil)
	var victim *harness.Root
	for _, root := range r.others(leader) {
		if root.Running() {
			victim = root
			break
		}
	}
	f := Fault{Kind: FollowerKill, Server: victim.Name, At: r.Rec.Now(), NewLeader: leader.Name}
	r.C.Kill(victim)
	f.Down = r.Rec.Now()
	ok := r.probe(r.others(victim))
	if !ok {
		r.violate(FollowerKill, fmt.Sprintf("no write acknowledged within %s after killing follower %s", r.Cfg.Recover, victim.Name))
	}
	r.C.Restart(victim)
	f.Ended = r.Rec.Now()
	r.record(f, !ok)
	r.catchUp(victim)
}

func (r *Runner) leaderStop() {
	r.T.Helper()
	victim, _ := r.leader(nil)
	f := Fault{Kind: LeaderStop, Server: victim.Name, At: r.Rec.Now()}
	r.C.Stop(victim)
	f.Down = f.At
	ok := r.probe(r.others(victim))
	if !ok {
		r.violate(LeaderStop, fmt.Sprintf("no write acknowledged within %s after stopping leader %s", r.Cfg.Recover, victim.Name))
	}
	leader, _ := r.leader(victim)
	f.NewLeader = leader.Name
	if leader == victim {
		r.violate(LeaderStop, "the stopped leader is still named leader by a majority")
	}
	// The fault lasts StopFor in all.
	if left := r.Cfg.StopFor - time.Duration(r.Rec.Now()-f.At); left > 0 {
		time.Sleep(left) // the fault's duration, not a synchronisation
	}
	r.C.Cont(victim)
	f.Ended = r.Rec.Now()
	r.record(f, !ok)
	r.catchUp(victim)
}

func (r *Runner) leaderIsolation() {
	r.T.Helper()
	if r.C.Net == nil {
		// A fault the run is configured for and cannot inject fails the
		// run: a chaos run that skips it proves less than it says.
		r.Skipped = append(r.Skipped, LeaderIsolation+": the cluster runs without Raft proxies")
		r.T.Errorf("%s is in the schedule but the cluster runs without Raft proxies (harness.Config.Proxies)", LeaderIsolation)
		return
	}
	victim, _ := r.leader(nil)
	f := Fault{Kind: LeaderIsolation, Server: victim.Name}
	f.At = r.Rec.Now()
	r.C.Net.Isolate(victim.Name)
	iso := Isolation{Server: victim.Name, Cut: r.Rec.Now()}
	f.Down = iso.Cut

	// Sample the isolated server's indexes until the heal.
	stop := make(chan struct{})
	var samples []IndexSample
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < 10000; n++ {
			if st, err := r.status(victim); err == nil {
				samples = append(samples, IndexSample{At: r.Rec.Now(), State: st.State, Term: st.Term,
					Commit: st.CommitIndex, Applied: st.AppliedIndex, LastLog: st.LastLogIndex})
			}
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond): // sampling interval
			}
		}
	}()

	ok := r.probe(r.others(victim))
	if !ok {
		r.violate(LeaderIsolation, fmt.Sprintf("the majority acknowledged no write within %s after %s was cut off", r.Cfg.Recover, victim.Name))
	}
	leader, _ := r.leader(victim)
	f.NewLeader, iso.MajorityLeader = leader.Name, leader.Name
	if left := r.Cfg.IsolateFor - time.Duration(r.Rec.Now()-f.At); left > 0 {
		time.Sleep(left) // the fault's duration, not a synchronisation
	}
	iso.Healed = r.Rec.Now()
	r.C.Net.Heal()
	close(stop)
	wg.Wait()
	f.Ended = iso.Healed
	iso.Samples = samples
	for _, op := range r.Rec.Ops() {
		if op.Acked() && op.Server != victim.Name && op.Call >= iso.Cut && op.Return <= iso.Healed {
			iso.MajorityAcked++
		}
	}
	r.Isolations = append(r.Isolations, iso)
	r.record(f, !ok)
	r.catchUp(victim)
}

// Steady is the record of a run of load without faults.
type Steady struct {
	Duration time.Duration `json:"duration_ns"`
	Leader   string        `json:"leader"`
	Term     uint64        `json:"term"`
	Samples  int           `json:"samples"`
	// LeaderChanges counts the times a server's term or leader differed
	// from its previous reading.
	LeaderChanges int      `json:"leader_changes"`
	Acked         int64    `json:"acked_writes"`
	Changes       []string `json:"changes,omitempty"`
}

// Steady watches every server's leader and term for d while the load runs;
// any change is a violation.
func (r *Runner) Steady(d time.Duration) Steady {
	r.T.Helper()
	r.Cfg = r.Cfg.withDefaults()
	leader, st := r.leader(nil)
	s := Steady{Duration: d, Leader: leader.Name, Term: st.Term}
	acked := r.Rec.Acked()
	type view struct {
		term   uint64
		leader string
	}
	prev := map[string]view{}
	for _, root := range r.C.Roots {
		prev[root.Name] = view{st.Term, leader.Name}
	}
	start := time.Now()
	for n := 0; time.Since(start) < d && n < 100000; n++ {
		all := r.statuses(nil)
		s.Samples++
		for root, st := range all {
			if v := (view{st.Term, st.Leader}); v != prev[root.Name] {
				s.LeaderChanges++
				s.Changes = append(s.Changes, fmt.Sprintf("%s after %s: %s term %d leader %q",
					root.Name, time.Since(start).Round(time.Millisecond), st.State, st.Term, st.Leader))
				prev[root.Name] = v
			}
		}
		if len(all) < len(r.C.Roots) {
			s.Changes = append(s.Changes, fmt.Sprintf("after %s only %d servers answered", time.Since(start).Round(time.Millisecond), len(all)))
		}
		time.Sleep(100 * time.Millisecond) // sampling interval
	}
	s.Acked = r.Rec.Acked() - acked
	if s.LeaderChanges > 0 {
		r.violate("steady", fmt.Sprintf("%d leader or term changes in %s without faults: %v", s.LeaderChanges, d, s.Changes))
	}
	if s.Acked == 0 {
		r.violate("steady", "no write acknowledged")
	}
	return s
}
