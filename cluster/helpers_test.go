package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func testOptions(t testing.TB) Options {
	return Options{
		Logger: hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Warn, Output: testWriter{t}}),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// testCluster is n root servers in this process, on loopback.
type testCluster struct {
	t       testing.TB
	opts    func(*Options) // applied to each server's options, if set
	servers []*Server
	dirs    []string
	caHash  string
	token   string
}

func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, nil)
}

// newTestClusterWith is newTestCluster with opts applied to each
// server's options.
func newTestClusterWith(t testing.TB, n int, opts func(*Options)) *testCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := t.TempDir()
	tc := &testCluster{t: t, opts: opts}
	dir := filepath.Join(base, "r1")
	srv, res, err := startBootstrap(ctx, BootstrapConfig{
		Network: "test.keymesh.example", Name: "r1", DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: tc.options(),
	})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	tc.servers, tc.dirs, tc.caHash, tc.token = []*Server{srv}, []string{dir}, res.CAHash, res.RootJoinToken
	t.Cleanup(tc.shutdown)
	for i := 2; i <= n; i++ {
		tc.join(ctx, i)
	}
	return tc
}

func (tc *testCluster) join(ctx context.Context, i int) *Server {
	tc.t.Helper()
	return tc.joinVia(ctx, i, tc.anyAPI())
}

// joinVia joins server i through the API at addr.
func (tc *testCluster) joinVia(ctx context.Context, i int, addr string) *Server {
	tc.t.Helper()
	token := tc.token
	tc.token = ""
	if token == "" {
		secret, tok, err := tc.leader().newJoinToken(api.CreateJoinTokenRequest{Kind: "root"})
		if err != nil {
			tc.t.Fatal(err)
		}
		if _, err := tc.leader().Propose(ctx, fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: tok}); err != nil {
			tc.t.Fatal(err)
		}
		token = secret
	}
	name := "r" + string(rune('0'+i))
	dir := filepath.Join(filepath.Dir(tc.dirs[0]), name)
	srv, err := startJoin(ctx, JoinConfig{
		Join: addr, Token: token, CAHash: tc.caHash, Name: name, DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: tc.options(),
	})
	if err != nil {
		tc.t.Fatalf("join %s: %v", name, err)
	}
	tc.servers = append(tc.servers, srv)
	tc.dirs = append(tc.dirs, dir)
	return srv
}

func (tc *testCluster) options() Options {
	o := testOptions(tc.t)
	if tc.opts != nil {
		tc.opts(&o)
	}
	return o
}

func (tc *testCluster) anyAPI() string {
	for _, s := range tc.servers {
		if s != nil {
			return s.APIAddr()
		}
	}
	tc.t.Fatal("no server running")
	return ""
}

// follower returns a running server other than leader.
func (tc *testCluster) follower(leader *Server) *Server {
	tc.t.Helper()
	for _, s := range tc.servers {
		if s != nil && s != leader {
			return s
		}
	}
	tc.t.Fatal("no follower running")
	return nil
}

// leader waits until a running server knows the leader and that server
// leads, woken by Raft's leader observations, and returns it.
func (tc *testCluster) leader() *Server {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var watcher *Server
	for _, s := range tc.servers {
		if s != nil {
			watcher = s
			break
		}
	}
	if watcher == nil {
		tc.t.Fatal("no server running")
	}
	leads := func(name string) *Server {
		for _, l := range tc.servers {
			if l != nil && l.Name() == name && l.IsLeader() {
				return l
			}
		}
		return nil
	}
	name, err := watcher.waitLeaderWhere(ctx, func(name string) bool { return leads(name) != nil })
	if err != nil {
		tc.t.Fatalf("no leader within 10s: %v", err)
	}
	return leads(name)
}

// converged waits until every running server has applied the same index
// and holds the same state hash, woken by each replica's applies.
func (tc *testCluster) converged(ctx context.Context) string {
	tc.t.Helper()
	for {
		var hi uint64
		for _, s := range tc.servers {
			if s != nil {
				hi = max(hi, s.store.Index())
			}
		}
		hash, same := "", true
		for _, s := range tc.servers {
			if s == nil {
				continue
			}
			if err := s.waitApplied(ctx, hi); err != nil {
				tc.t.Fatalf("servers did not converge: %v", err)
			}
			h, idx := hashIndex(s.store)
			if idx != hi || (hash != "" && h != hash) {
				same = false
			}
			hash = h
		}
		if same {
			return hash
		}
	}
}

// waitState waits until cond holds on s's replica, woken by its applies.
func waitState(t testing.TB, s *Server, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		if _, err := s.store.WaitIndex(ctx, s.store.Index()); err != nil {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}

func (tc *testCluster) shutdown() {
	for i, s := range tc.servers {
		if s != nil {
			s.Shutdown()
			tc.servers[i] = nil
		}
	}
}

// startBootstrap is Bootstrap, then Start: a server running in the
// background until the test shuts it down.
func startBootstrap(ctx context.Context, cfg BootstrapConfig) (*Server, *BootstrapResult, error) {
	srv, res, err := Bootstrap(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, nil, err
	}
	return srv, res, nil
}

// startJoin is Join, then Start.
func startJoin(ctx context.Context, cfg JoinConfig) (*Server, error) {
	srv, err := Join(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	return srv, nil
}

// startOpen is Open, then Start.
func startOpen(ctx context.Context, dir string, opts Options) (*Server, error) {
	srv, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	return srv, nil
}
