// Package harness runs keymesh root servers and node agents as real
// processes of the built binary on loopback, for the end-to-end and chaos
// tests.
//
// Call Build once per test binary (from TestMain), then StartCluster (or
// Start with a Config) per test. Every process is killed, every proxy closed
// and every directory removed by t.Cleanup. Servers pick free ports at
// bootstrap or join (port 0) and keep them across restarts; the harness
// reads them back from each data directory.
//
// With Config.RaftIPs the k-th server binds Raft to its own loopback address
// 127.0.0.(10+k), from which its Raft connections also leave. With
// Config.Proxies a FaultNet proxy stands in front of every Raft listener and
// is what the server advertises, so that tests can cut links (Cluster.Net).
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
)

// Main is the TestMain of a package of process tests: it builds the binary
// once into a temporary directory (with -race when KEYMESH_E2E_RACE=1),
// stores its path in *bin, runs the tests and removes the directory.
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "keymesh-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = Build(dir, os.Getenv("KEYMESH_E2E_RACE") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Build compiles ./cmd/keymesh into dir and returns the binary's path. With
// race, the binary is built with the race detector.
func Build(dir string, race bool) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(dir, "keymesh")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/keymesh")
	cmd := exec.Command("go", args...)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Root is one root server process. Its address fields are set once the
// server first comes up and do not change across restarts.
type Root struct {
	Name    string
	Dir     string
	APIAddr string
	// RaftAddr is where the server listens for Raft.
	RaftAddr string
	// RaftAdvertise is the address other servers dial for Raft (its proxy's
	// when the cluster runs with proxies); empty means RaftAddr.
	RaftAdvertise string
	// RaftIP is the loopback address Raft binds to and dials from ("" for
	// the default 127.0.0.1).
	RaftIP string
	// RTRAddr is where the server serves RTR to routers, when the
	// cluster runs with Config.RTR.
	RTRAddr string

	proc
}

// proc is a process of the built binary (restarted any number of times)
// and everything its processes wrote.
type proc struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
	from int // where the current process's output starts in log
}

// Running reports whether the process is alive (it may be stopped).
func (r *proc) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// PID is the process id, 0 when not running.
func (r *proc) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// current returns what the current process wrote so far.
func (r *proc) current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()[r.from:]
}

// Log returns what the server's processes wrote so far, every restart
// after the one before.
func (r *proc) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// Cluster is a set of root server processes of one network.
type Cluster struct {
	t       testing.TB
	Bin     string
	Base    string
	Network string
	CAHash  string
	Roots   []*Root
	// Agents are the node agents StartAgents ran.
	Agents []*Agent
	// ExtraArgs are passed to every bootstrap, join and start (e.g. Raft
	// timeouts).
	ExtraArgs []string
	// Net holds the Raft proxies when the cluster runs with Config.Proxies.
	Net *FaultNet
	// GossipAgents makes StartAgents run its agents gossiping on loopback
	// (each joining the first; a restarted agent joins another).
	GossipAgents bool

	raftIPs bool
	rtr     bool
	added   int // servers added so far, for their Raft addresses

	mu      sync.Mutex
	clients map[*Root]*client.Client // kept for status calls: a TLS handshake per poll costs too much CPU
}

// Config describes a cluster for Start.
type Config struct {
	// Servers is how many root servers to run (bootstrap and joins); default 3.
	Servers int
	// Extra flags for every bootstrap, join and start (e.g. Raft timeouts).
	Extra []string
	// Network is the network name; default e2e.keymesh.test.
	Network string
	// RaftIPs binds the k-th server's Raft listener (and its Raft dials) to
	// 127.0.0.(10+k).
	RaftIPs bool
	// RTR has every root serve RTR (--rtr-addr) on a loopback port of
	// its own (Root.RTRAddr).
	RTR bool
	// Proxies puts a FaultNet proxy in front of every Raft listener and has
	// each server advertise its proxy (implies RaftIPs). It needs the
	// binary's --raft-advertise flag; Start skips the test without it.
	Proxies bool
}

// AdvertiseFlag is the flag of `keymesh root bootstrap|join` that Proxies
// needs.
const AdvertiseFlag = "--raft-advertise"

// Supports reports whether `bin <command...> --help` lists flag.
func Supports(bin string, flag string, command ...string) bool {
	out, err := exec.Command(bin, append(command, "--help")...).CombinedOutput()
	return err == nil && bytes.Contains(out, []byte(flag+" "))
}

// StartCluster bootstraps r1 and joins n-1 more servers through it.
func StartCluster(t testing.TB, bin string, n int, extra ...string) *Cluster {
	t.Helper()
	return Start(t, bin, Config{Servers: n, Extra: extra})
}

// Start bootstraps r1 and joins the other servers of cfg through it.
func Start(t testing.TB, bin string, cfg Config) *Cluster {
	t.Helper()
	if cfg.Servers == 0 {
		cfg.Servers = 3
	}
	if cfg.Network == "" {
		cfg.Network = "e2e.keymesh.test"
	}
	c := &Cluster{t: t, Bin: bin, Base: t.TempDir(), Network: cfg.Network, ExtraArgs: cfg.Extra, raftIPs: cfg.RaftIPs || cfg.Proxies, rtr: cfg.RTR}
	if cfg.Proxies {
		if !Supports(bin, AdvertiseFlag, "root", "bootstrap") || !Supports(bin, AdvertiseFlag, "root", "join") {
			t.Fatalf("the keymesh binary has no %s flag: the Raft proxies (link faults) this test asks for need it", AdvertiseFlag)
		}
		c.Net = NewFaultNet()
		t.Cleanup(c.Net.Close)
	}
	t.Cleanup(c.KillAll)
	t.Cleanup(c.closeClients)
	r1 := c.newRoot("r1")
	args := []string{"root", "bootstrap", "--network", c.Network, "--name", "r1", "--data-dir", r1.Dir}
	c.spawn(r1, append(args, c.addrArgs(r1)...)...)
	c.awaitReady(r1, readyBootstrap, 30*time.Second)
	roots, err := ca.ReadCertsFile(cluster.RootsPath(r1.Dir))
	if err != nil {
		t.Fatal(err)
	}
	c.CAHash = ca.Hash(roots[0])
	for i := 2; i <= cfg.Servers; i++ {
		c.Join(fmt.Sprintf("r%d", i))
	}
	return c
}

// newRoot makes the record of the next server, with its Raft address and
// proxy when the cluster has them.
func (c *Cluster) newRoot(name string) *Root {
	c.t.Helper()
	c.added++
	r := &Root{Name: name, Dir: filepath.Join(c.Base, name)}
	if c.raftIPs {
		if c.added > 200 {
			c.t.Fatal("harness: out of loopback addresses for Raft")
		}
		r.RaftIP = fmt.Sprintf("127.0.0.%d", 10+c.added)
	}
	if c.Net != nil {
		dir := r.Dir
		addr, err := c.Net.Add(name, r.RaftIP, func() (string, error) { return raftBindAddr(dir) })
		if err != nil {
			c.t.Fatal(err)
		}
		r.RaftAdvertise = addr
	}
	if c.rtr {
		r.RTRAddr = FreePort(c.t)
	}
	c.Roots = append(c.Roots, r)
	return r
}

// FreePort returns a loopback host:port that was free a moment ago, for a
// flag that takes a fixed port and whose address the test must know
// (port 0 would pick one the test cannot read back).
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// addrArgs are the listener flags of bootstrap and join for r.
func (c *Cluster) addrArgs(r *Root) []string {
	ip := r.RaftIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	args := []string{"--raft-addr", ip + ":0", "--api-addr", "127.0.0.1:0"}
	if r.RaftAdvertise != "" {
		args = append(args, AdvertiseFlag, r.RaftAdvertise)
	}
	if r.RTRAddr != "" {
		args = append(args, "--rtr-addr", r.RTRAddr)
	}
	return args
}

// raftBindAddr reads where the server in dir listens for Raft.
func raftBindAddr(dir string) (string, error) {
	sf, err := readServerFile(dir)
	if err != nil {
		return "", err
	}
	if sf.RaftAddr == "" {
		return "", errors.New("harness: server.json names no raft_addr")
	}
	return sf.RaftAddr, nil
}

// Join adds a new server through any running server, with a fresh token.
func (c *Cluster) Join(name string) *Root {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tok api.CreatedJoinToken
	c.Retry(ctx, "create a root-join token", func(cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
		return err
	})
	return c.JoinWithToken(name, tok.Secret)
}

// JoinWithToken adds a new server through any running server.
func (c *Cluster) JoinWithToken(name, token string) *Root {
	c.t.Helper()
	return c.joinThrough(c.AnyAPI(nil), name, token)
}

// JoinVia adds a new server through root via, with a fresh token: via
// admits it, so via must open the AS root key.
func (c *Cluster) JoinVia(via *Root, name string) *Root {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := c.Client(via).CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
	if err != nil {
		c.t.Fatalf("create a root-join token at %s: %v", via.Name, err)
	}
	return c.joinThrough(via.APIAddr, name, tok.Secret)
}

func (c *Cluster) joinThrough(join, name, token string) *Root {
	c.t.Helper()
	r := c.newRoot(name)
	args := []string{"root", "join", "--join", join, "--token", token, "--ca-hash", c.CAHash, "--name", name, "--data-dir", r.Dir}
	c.spawn(r, append(args, c.addrArgs(r)...)...)
	c.awaitReady(r, readyJoin, 60*time.Second)
	return r
}

func (c *Cluster) spawn(r *Root, args ...string) {
	c.t.Helper()
	c.start(&r.proc, r.Name, append(args, c.ExtraArgs...)...)
}

// start runs the binary with args as p's current process.
func (c *Cluster) start(r *proc, name string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(c.Bin, args...)
	r.mu.Lock()
	if r.log == nil {
		r.log = &bytes.Buffer{}
	} else {
		fmt.Fprintf(r.log, "--- harness: %s restarts at %s ---\n", name, time.Now().UTC().Format(time.RFC3339Nano))
	}
	r.from = r.log.Len()
	w := &lockedWriter{w: r.log, mu: &r.mu}
	r.mu.Unlock()
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// What keymesh prints on stdout once a server is ready: bootstrap after the
// network exists, join after the server has become a voter, start once it
// serves (a lone restarted server has no quorum and need not have one).
const (
	readyBootstrap = "Bootstrapped network"
	readyJoin      = " joined: raft "
	readyStart     = " started: raft "
)

// awaitReady waits until r's data directory is complete, its current
// process printed ready and its API answers.
func (c *Cluster) awaitReady(r *Root, ready string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if !r.Running() {
			c.t.Fatalf("%s exited before it was ready:\n%s", r.Name, r.Log())
		}
		if err := c.readAddrs(r); err == nil && strings.Contains(r.current(), ready) {
			if cl, err := c.clientFor(r, false); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, herr := cl.Health(ctx)
				cancel()
				cl.Close()
				if herr == nil || errors.Is(herr, client.ErrNoLeader) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready within %s (no %q on its output):\n%s", r.Name, timeout, strings.TrimSpace(ready), r.Log())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

type serverFile struct {
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
}

func readServerFile(dir string) (serverFile, error) {
	var sf serverFile
	b, err := os.ReadFile(filepath.Join(dir, "server.json"))
	if err != nil {
		return sf, err
	}
	err = json.Unmarshal(b, &sf)
	return sf, err
}

// readAddrs fills r's addresses from its data directory. They are written
// only when they change (the first time), so that other goroutines may read
// them while a server restarts.
func (c *Cluster) readAddrs(r *Root) error {
	sf, err := readServerFile(r.Dir)
	if err != nil {
		return err
	}
	if r.RaftAddr != sf.RaftAddr {
		r.RaftAddr = sf.RaftAddr
	}
	if r.APIAddr != sf.APIAddr {
		r.APIAddr = sf.APIAddr
	}
	return nil
}

// Credential is the admin credential of r1.
func (c *Cluster) Credential() string { return cluster.CredentialPath(c.Roots[0].Dir) }

// CAFile is the AS root PEM file.
func (c *Cluster) CAFile() string { return cluster.RootsPath(c.Roots[0].Dir) }

func (c *Cluster) clientFor(r *Root, admin bool) (*client.Client, error) {
	return c.newClient(r, admin, 10*time.Second)
}

func (c *Cluster) newClient(r *Root, admin bool, timeout time.Duration) (*client.Client, error) {
	cfg := client.Config{Server: r.APIAddr, CAFile: c.CAFile(), Timeout: timeout}
	if admin {
		cfg.Credential = c.Credential()
	}
	return client.New(cfg)
}

// NewClient returns an admin client of r whose calls time out after timeout;
// the caller closes it. Unlike Client it may be called from any goroutine.
func (c *Cluster) NewClient(r *Root, timeout time.Duration) (*client.Client, error) {
	return c.newClient(r, true, timeout)
}

// Client returns an admin client of r; the test owns it.
func (c *Cluster) Client(r *Root) *client.Client {
	c.t.Helper()
	cl, err := c.clientFor(r, true)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

// AnyAPI returns the API address of a running server other than skip.
func (c *Cluster) AnyAPI(skip *Root) string {
	for _, r := range c.Roots {
		if r != skip && r.Running() && r.APIAddr != "" {
			return r.APIAddr
		}
	}
	c.t.Fatal("no running server")
	return ""
}

// Retry runs f against each running server in turn until it succeeds or
// ctx ends.
func (c *Cluster) Retry(ctx context.Context, what string, f func(*client.Client) error) {
	c.t.Helper()
	var last error
	for ctx.Err() == nil {
		for _, r := range c.Running() {
			cl, err := c.clientFor(r, true)
			if err != nil {
				c.t.Fatal(err)
			}
			last = f(cl)
			cl.Close()
			if last == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("%s: %v", what, last)
}

// Running lists the servers whose processes are alive.
func (c *Cluster) Running() []*Root {
	var out []*Root
	for _, r := range c.Roots {
		if r.Running() {
			out = append(out, r)
		}
	}
	return out
}

// statusClient returns the kept admin client of r, made on first use.
func (c *Cluster) statusClient(r *Root) (*client.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[r]; ok {
		return cl, nil
	}
	cl, err := c.clientFor(r, true)
	if err != nil {
		return nil, err
	}
	if c.clients == nil {
		c.clients = map[*Root]*client.Client{}
	}
	c.clients[r] = cl
	return cl, nil
}

func (c *Cluster) closeClients() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.clients {
		cl.Close()
	}
	c.clients = nil
}

// StatusOf asks r for its own status. It may be called from any goroutine.
func (c *Cluster) StatusOf(ctx context.Context, r *Root) (api.Status, error) {
	cl, err := c.statusClient(r)
	if err != nil {
		return api.Status{}, err
	}
	return cl.Status(ctx)
}

// Statuses asks every running server for its own status.
func (c *Cluster) Statuses(ctx context.Context) map[string]api.Status {
	out := map[string]api.Status{}
	for _, r := range c.Running() {
		if st, err := c.StatusOf(ctx, r); err == nil {
			out[r.Name] = st
		}
	}
	return out
}

// Leader waits until the running servers agree on a running leader and
// returns it.
func (c *Cluster) Leader(timeout time.Duration) *Root {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]api.Status
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = c.Statuses(ctx)
		cancel()
		for _, r := range c.Running() {
			if st, ok := last[r.Name]; ok && st.State == "Leader" {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("no leader among running servers within %s: %+v", timeout, last)
	return nil
}

// Kill sends SIGKILL and waits for the process to exit.
func (c *Cluster) Kill(r *Root) { c.signal(r, syscall.SIGKILL, true) }

// Stop sends SIGSTOP (the process freezes); Cont resumes it.
func (c *Cluster) Stop(r *Root) { c.signal(r, syscall.SIGSTOP, false) }

// Cont sends SIGCONT.
func (c *Cluster) Cont(r *Root) { c.signal(r, syscall.SIGCONT, false) }

// Terminate asks r to stop cleanly (SIGTERM) and waits.
func (c *Cluster) Terminate(r *Root) { c.signal(r, syscall.SIGTERM, true) }

func (c *Cluster) signal(r *Root, sig syscall.Signal, wait bool) {
	c.t.Helper()
	c.signalProc(&r.proc, r.Name, sig, wait)
}

func (c *Cluster) signalProc(r *proc, name string, sig syscall.Signal, wait bool) {
	c.t.Helper()
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if !wait {
		return
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		if sig != syscall.SIGKILL {
			c.t.Errorf("%s did not stop within 20s after %v", name, sig)
		}
	}
}

// Restart starts r again from its data directory.
func (c *Cluster) Restart(r *Root) {
	c.t.Helper()
	if r.Running() {
		c.t.Fatalf("%s is still running", r.Name)
	}
	args := []string{"root", "start", "--data-dir", r.Dir}
	if r.RTRAddr != "" {
		args = append(args, "--rtr-addr", r.RTRAddr)
	}
	c.spawn(r, args...)
	c.awaitReady(r, readyStart, 30*time.Second)
}

// Remove forgets r (after it was removed from the cluster). Clients kept
// for status calls are made anew: those made with r's admin credential
// stopped working when its issuing certificate was revoked.
func (c *Cluster) Remove(r *Root) {
	c.closeClients()
	for i, x := range c.Roots {
		if x == r {
			c.Roots = append(c.Roots[:i], c.Roots[i+1:]...)
			return
		}
	}
}

// WaitCaughtUp waits until r has applied at least index.
func (c *Cluster) WaitCaughtUp(r *Root, index uint64, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last api.Status
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last, err = c.StatusOf(ctx, r)
		cancel()
		if err == nil && last.AppliedIndex >= index {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("%s did not apply index %d within %s: applied %d, error %v", r.Name, index, timeout, last.AppliedIndex, err)
}

// KillAll kills every process (cleanup).
func (c *Cluster) KillAll() {
	for _, a := range c.Agents {
		if a.Running() {
			c.signalProc(&a.proc, a.Name, syscall.SIGKILL, true)
		}
	}
	for _, r := range c.Roots {
		if r.Running() {
			c.Cont(r)
			c.Kill(r)
		}
	}
}

// WaitConverged waits until every running server reports the same applied
// index and state hash, and returns the hash.
func (c *Cluster) WaitConverged(timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]api.Status
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = c.Statuses(ctx)
		cancel()
		if h, ok := converged(last, len(c.Running())); ok {
			return h
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("servers did not converge within %s: %s", timeout, describe(last))
	return ""
}

func converged(st map[string]api.Status, want int) (string, bool) {
	if len(st) != want || want == 0 {
		return "", false
	}
	var hash string
	var idx uint64
	for _, s := range st {
		if hash == "" {
			hash, idx = s.StateHash, s.AppliedIndex
		}
		if s.StateHash != hash || s.AppliedIndex != idx {
			return "", false
		}
	}
	return hash, true
}

func describe(st map[string]api.Status) string {
	var b strings.Builder
	for n, s := range st {
		fmt.Fprintf(&b, "%s: %s applied=%d hash=%.12s; ", n, s.State, s.AppliedIndex, s.StateHash)
	}
	return b.String()
}
