package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
)

// Agent is one node agent process (`keymesh node run`) of a node that
// registered with `keymesh node join`.
type Agent struct {
	Name string
	Dir  string
	// Gossip is where the agent gossips, if it does (as it last started).
	Gossip string
	proc
	// of is the agent whose process runs this one, for a membership of
	// another network (In).
	of *Agent
}

// In is the agent of a's node in its membership of network (the same
// process; its local API under networks/NETWORK).
func (a *Agent) In(network string) *Agent {
	return &Agent{Name: a.Name + " in " + network, Dir: agent.MembershipDir(a.Dir, network), of: a}
}

// Running reports whether the agent's process is alive.
func (a *Agent) Running() bool {
	if a.of != nil {
		return a.of.Running()
	}
	return a.proc.Running()
}

// Log is what the agent's processes wrote so far.
func (a *Agent) Log() string {
	if a.of != nil {
		return a.of.Log()
	}
	return a.proc.Log()
}

// Socket is the path of the agent's local API.
func (a *Agent) Socket() string { return agent.SocketPath(a.Dir) }

// StartAgents registers n nodes (agent-1 … agent-n, one join token of n
// uses, each through the next running root) with `keymesh node join` and
// runs `keymesh node run` for each; it returns once every agent serves its
// local API and holds a trust document.
func (c *Cluster) StartAgents(n int) []*Agent {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var tok api.CreatedJoinToken
	c.Retry(ctx, "create a node join token", func(cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Principal: "NODE", Uses: n, TTL: "1h",
			Description: "harness agents"})
		return err
	})
	running := c.Running()
	if len(running) == 0 {
		c.t.Fatal("harness: no root server runs to register agents with")
	}
	var started []*Agent
	join := c.gossipJoin(nil)
	for i := range n {
		name := fmt.Sprintf("agent-%d", len(c.Agents)+1)
		a := &Agent{Name: name, Dir: filepath.Join(c.Base, "agents", name)}
		root := running[i%len(running)]
		cmd := exec.CommandContext(ctx, c.Bin, "node", "join", "--server", root.APIAddr, "--ca-hash", c.CAHash,
			"--network", c.Network, "--node-id", name, "--data-dir", a.Dir, "--token", tok.Secret)
		cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
		if out, err := cmd.CombinedOutput(); err != nil {
			c.t.Fatalf("keymesh node join %s through %s: %v\n%s", name, root.Name, err, out)
		}
		c.Agents = append(c.Agents, a)
		c.start(&a.proc, name, c.runArgs(a, join)...)
		started = append(started, a)
		if c.GossipAgents && join == "" {
			c.awaitAgent(a, 30*time.Second)
			join = c.AwaitGossip(a, 30*time.Second)
		}
	}
	for _, a := range started {
		c.awaitAgent(a, 30*time.Second)
		if c.GossipAgents {
			c.AwaitGossip(a, 30*time.Second)
		}
	}
	return started
}

// runArgs are the arguments of `keymesh node run` for a: with
// GossipAgents, gossiping on a loopback port and joining join.
func (c *Cluster) runArgs(a *Agent, join string) []string {
	args := []string{"node", "run", "--data-dir", a.Dir}
	if c.GossipAgents {
		args = append(args, "--gossip-addr", "127.0.0.1:0")
		if join != "" {
			args = append(args, "--gossip-join", join)
		}
	}
	return args
}

// gossipJoin is where an agent joins the gossip: a running agent's
// address but skip's ("" when none gossips).
func (c *Cluster) gossipJoin(skip *Agent) string {
	for _, o := range c.Agents {
		if o != skip && o.Gossip != "" && o.Running() {
			return o.Gossip
		}
	}
	return ""
}

// awaitAgent waits until a's local API answers with a trust document.
func (c *Cluster) awaitAgent(a *Agent, timeout time.Duration) {
	c.t.Helper()
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if !a.Running() {
			c.t.Fatalf("agent %s exited:\n%s", a.Name, a.Log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var st agent.StatusResponse
		st, err = lc.Status(ctx)
		cancel()
		if err == nil && st.Trust.Index > 0 {
			return
		}
		if err == nil {
			err = errors.New("no trust document yet")
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("agent %s not ready within %s: %v\n%s", a.Name, timeout, err, strings.TrimSpace(a.Log()))
}

// RestartAgent starts a's agent again if it is not running (it may have
// been killed) and waits until it serves.
func (c *Cluster) RestartAgent(a *Agent) {
	c.t.Helper()
	if !a.Running() {
		c.start(&a.proc, a.Name, c.runArgs(a, c.gossipJoin(a))...)
	}
	c.awaitAgent(a, 30*time.Second)
	if c.GossipAgents {
		c.AwaitGossip(a, 30*time.Second)
	}
}

// KillAgent kills a's process with SIGKILL and waits for it.
func (c *Cluster) KillAgent(a *Agent) { c.signalProc(&a.proc, a.Name, syscall.SIGKILL, true) }

// JoinNode registers node id with `keymesh node join` through a running
// root, with a node join token made for req (Kind node, one use, unless
// req says otherwise), and returns its data directory. extra flags go to
// `keymesh node join` (e.g. --dns). It does not run the node's agent.
func (c *Cluster) JoinNode(id string, req api.CreateJoinTokenRequest, extra ...string) string {
	c.t.Helper()
	return c.JoinNodeVia(nil, id, req, extra...)
}

// JoinNodeVia is JoinNode through root r (its issuer signs the node's
// certificate); nil means any running root.
func (c *Cluster) JoinNodeVia(r *Root, id string, req api.CreateJoinTokenRequest, extra ...string) string {
	c.t.Helper()
	server := c.AnyAPI(nil)
	if r != nil {
		server = r.APIAddr
	}
	return c.JoinNodeAt(server, filepath.Join(c.Base, "nodes", id), id, c.NodeJoinToken(req), extra...)
}

// NodeJoinToken makes a node join token of req and returns its secret.
func (c *Cluster) NodeJoinToken(req api.CreateJoinTokenRequest) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req.Kind = "node"
	var tok api.CreatedJoinToken
	c.Retry(ctx, "create a node join token", func(cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, req)
		return err
	})
	return tok.Secret
}

// JoinNodeAt runs `keymesh node join` into dir through server with a
// join token: a new directory, or that of a node of another network (a
// membership of c's network beside it).
func (c *Cluster) JoinNodeAt(server, dir, id, token string, extra ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"node", "join", "--server", server, "--ca-hash", c.CAHash, "--network", c.Network,
		"--node-id", id, "--data-dir", dir, "--token", token}, extra...)
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("keymesh node join %s: %v\n%s", id, err, out)
	}
	return dir
}

// RunAgent runs `keymesh node run` for the node in dir (registered with
// JoinNode) and waits until it serves with a trust document.
func (c *Cluster) RunAgent(name, dir string, extra ...string) *Agent {
	c.t.Helper()
	a := &Agent{Name: name, Dir: dir}
	c.Agents = append(c.Agents, a)
	c.start(&a.proc, name, append([]string{"node", "run", "--data-dir", dir}, extra...)...)
	c.awaitAgent(a, 30*time.Second)
	return a
}

// Wait waits until the agent's process exits and returns its exit error
// (nil for status 0), or fails the test after timeout.
func (a *Agent) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		t.Fatalf("agent %s never ran", a.Name)
	}
	select {
	case <-done:
		if st := cmd.ProcessState; st != nil && !st.Success() {
			return fmt.Errorf("agent %s exited: %s", a.Name, st)
		}
		return nil
	case <-time.After(timeout):
		t.Fatalf("agent %s still runs after %s:\n%s", a.Name, timeout, a.Log())
		return nil
	}
}

// StartProc runs the binary with args as a's process without waiting for
// it to serve (for agents that are not meant to come up).
func (c *Cluster) StartProc(a *Agent, args ...string) {
	c.t.Helper()
	c.Agents = append(c.Agents, a)
	c.start(&a.proc, a.Name, args...)
}

// StartMesh registers n nodes (mesh-1 … mesh-n) and runs each agent with
// peering sessions: it listens on a loopback port and dials every agent
// started before it, so that the n agents form a full mesh of n(n-1)/2
// sessions. It returns once every agent serves; WaitEstablished waits for
// the sessions. extra flags go to every `keymesh node run`.
func (c *Cluster) StartMesh(n int, extra ...string) []*Agent {
	c.t.Helper()
	return c.StartGraph("mesh", n, func(int, int) (string, bool) { return "", true }, func(int) []string { return extra })
}

// StartGraph registers n nodes (prefix-1 … prefix-n) and runs their
// agents with peering sessions on loopback ports: agent i (from 0) dials
// each agent j < i for which link(j, i) holds, with the peer options it
// returns (",role=customer" and the like); extra(i) are more flags of
// agent i's `keymesh node run`. It returns once every agent serves.
func (c *Cluster) StartGraph(prefix string, n int, link func(j, i int) (opts string, ok bool), extra func(i int) []string) []*Agent {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out []*Agent
	var addrs []string
	for i, a := range c.register(ctx, prefix, n) {
		name := a.Name
		args := []string{"node", "run", "--data-dir", a.Dir, "--listen", "127.0.0.1:0"}
		for j, addr := range addrs {
			if opts, ok := link(j, i); ok {
				args = append(args, "--peer", fmt.Sprintf("%s-%d@%s%s", prefix, j+1, addr, opts))
			}
		}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		c.Agents = append(c.Agents, a)
		c.start(&a.proc, name, args...)
		c.awaitAgent(a, 30*time.Second)
		res, err := a.Peers(ctx)
		if err != nil || res.Listen == "" {
			c.t.Fatalf("agent %s takes no sessions: %v %+v", name, err, res)
		}
		addrs = append(addrs, res.Listen)
		out = append(out, a)
	}
	return out
}

// Routes asks the agent for its routes (peer: that neighbour's only).
func (a *Agent) Routes(ctx context.Context, peer string) (agent.RoutesResponse, error) {
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lc.Routes(ctx, peer)
}

// Announce has the agent originate a route.
func (a *Agent) Announce(ctx context.Context, nlri string) error {
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := lc.Announce(ctx, agent.AnnounceRequest{NLRI: nlri})
	return err
}

// Withdraw has the agent stop originating a route.
func (a *Agent) Withdraw(ctx context.Context, nlri string) error {
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lc.Withdraw(ctx, nlri)
}

// Best is the agent's best route for nlri, nil if it has none.
func (a *Agent) Best(ctx context.Context, nlri string) (*routing.RouteStatus, error) {
	res, err := a.Routes(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, r := range res.Routes {
		if r.NLRI == nlri && r.Best {
			return &r, nil
		}
	}
	return nil, nil
}

// WaitBest polls the agent (a process: nothing else to wait on) until
// cond holds of its best route for nlri (nil: none), for at most timeout;
// it returns when it held.
func (c *Cluster) WaitBest(a *Agent, nlri string, timeout time.Duration, what string, cond func(*routing.RouteStatus) bool) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *routing.RouteStatus
	for {
		b, err := a.Best(context.Background(), nlri)
		if err == nil {
			if cond(b) {
				return time.Now()
			}
			last = b
		}
		if time.Now().After(deadline) {
			res, _ := a.Routes(context.Background(), "")
			c.t.Fatalf("%s: %s did not happen within %s (best %+v, RIB %+v)", a.Name, what, timeout, last, res.Routes)
		}
		if !a.Running() {
			c.t.Fatalf("agent %s exited:\n%s", a.Name, a.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Peers asks the agent for its peering sessions.
func (a *Agent) Peers(ctx context.Context) (agent.PeersResponse, error) {
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lc.Peers(ctx)
}

// WaitEstablished waits until a has want established sessions.
func (c *Cluster) WaitEstablished(a *Agent, want int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	got := 0
	for time.Now().Before(deadline) {
		if !a.Running() {
			c.t.Fatalf("agent %s exited:\n%s", a.Name, a.Log())
		}
		res, err := a.Peers(context.Background())
		if err == nil {
			got = 0
			for _, p := range res.Peers {
				if p.State == session.Established {
					got++
				}
			}
			if got >= want {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process
	}
	c.t.Fatalf("agent %s has %d established sessions after %s, want %d:\n%s", a.Name, got, timeout, want, a.Log())
}

// register registers n nodes (prefix-1 … prefix-n, one join token of n
// uses, each through the next running root) with `keymesh node join` and
// returns their agents, not running yet.
func (c *Cluster) register(ctx context.Context, prefix string, n int) []*Agent {
	c.t.Helper()
	var tok api.CreatedJoinToken
	c.Retry(ctx, "create a node join token", func(cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Principal: "NODE", Uses: n, TTL: "1h",
			Description: "harness " + prefix})
		return err
	})
	running := c.Running()
	var out []*Agent
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i+1)
		a := &Agent{Name: name, Dir: filepath.Join(c.Base, prefix, name)}
		root := running[i%len(running)]
		cmd := exec.CommandContext(ctx, c.Bin, "node", "join", "--server", root.APIAddr, "--ca-hash", c.CAHash,
			"--network", c.Network, "--node-id", name, "--data-dir", a.Dir, "--token", tok.Secret)
		cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
		if out, err := cmd.CombinedOutput(); err != nil {
			c.t.Fatalf("keymesh node join %s: %v\n%s", name, err, out)
		}
		out = append(out, a)
	}
	return out
}

// StartGossip registers n nodes (prefix-1 … prefix-n) and runs their
// agents gossiping on loopback ports: agent 1 first, every other joining
// it. extra(i) are more flags of agent i's `keymesh node run` (from 0).
// It returns once every agent gossips; WaitMembers waits for the graph.
func (c *Cluster) StartGossip(prefix string, n int, extra func(i int) []string) []*Agent {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out []*Agent
	join := ""
	for i, a := range c.register(ctx, prefix, n) {
		name := a.Name
		args := []string{"node", "run", "--data-dir", a.Dir, "--gossip-addr", "127.0.0.1:0"}
		if join != "" {
			args = append(args, "--gossip-join", join)
		}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		c.Agents = append(c.Agents, a)
		c.start(&a.proc, name, args...)
		c.awaitAgent(a, 30*time.Second)
		addr := c.AwaitGossip(a, 30*time.Second)
		if join == "" {
			join = addr
		}
		out = append(out, a)
	}
	return out
}

// AwaitGossip waits until a gossips and returns where.
func (c *Cluster) AwaitGossip(a *Agent, timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var res agent.MembersResponse
		if res, err = a.Members(context.Background()); err == nil && res.Gossip != "" {
			a.Gossip = res.Gossip
			return res.Gossip
		}
		time.Sleep(50 * time.Millisecond) // polling a process
	}
	c.t.Fatalf("agent %s does not gossip after %s: %v\n%s", a.Name, timeout, err, a.Log())
	return ""
}

// Members asks the agent for its gossip node graph.
func (a *Agent) Members(ctx context.Context) (agent.MembersResponse, error) {
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lc.Members(ctx)
}

// WaitMember waits until a's graph shows member in state (one of them)
// and returns when it first saw it.
func (c *Cluster) WaitMember(a *Agent, member string, timeout time.Duration, states ...gossip.MemberState) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last agent.MembersResponse
	for time.Now().Before(deadline) {
		res, err := a.Members(context.Background())
		if err == nil {
			last = res
			for _, m := range res.Members {
				if m.Node == member && slices.Contains(states, m.State) {
					return time.Now()
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // polling a process
	}
	c.t.Fatalf("agent %s's graph never showed %s as %v in %s: %+v\n%s", a.Name, member, states, timeout, last.Members, a.Log())
	return time.Time{}
}

// Metric reads one series of the agent's metrics, e.g.
// `keymesh_session_handshake_failures_total{reason="network"}` (0 when
// absent).
func (a *Agent) Metric(t testing.TB, series string) int {
	t.Helper()
	lc := agent.NewLocalClient(a.Socket())
	defer lc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := lc.Metrics(ctx)
	if err != nil {
		t.Fatalf("agent %s metrics: %v", a.Name, err)
	}
	n, _ := Series(b, series)
	return n
}

// Series finds one series, e.g. `keymesh_raft_term`, in a Prometheus text
// exposition; ok is false when it is absent.
func Series(exposition []byte, series string) (n int, ok bool) {
	for _, line := range strings.Split(string(exposition), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), true
		}
	}
	return 0, false
}

// WaitFederatedKeys waits until c's leader holds keys of the federated
// network (its leader fetches them every 2 s; polled, nothing to wait on).
func (c *Cluster) WaitFederatedKeys(network string, timeout time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		anchors, err := c.Client(c.Leader(10 * time.Second)).Anchors(ctx)
		if err != nil {
			c.t.Fatalf("no keys of %s held in %s after %s: %v", network, c.Network, timeout, err)
		}
		for _, an := range anchors {
			if an.Network == network && an.Keys > 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a process
	}
}
