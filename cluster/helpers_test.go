package cluster

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

var errNoLeaderYet = errors.New("no leader yet")

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

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
	servers []*Server
	dirs    []string
	caHash  string
	token   string
}

func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := t.TempDir()
	tc := &testCluster{t: t}
	dir := filepath.Join(base, "r1")
	srv, res, err := Bootstrap(ctx, BootstrapConfig{
		Network: "test.keymesh.example", Name: "r1", DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(t),
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
	srv, err := Join(ctx, JoinConfig{
		Join: addr, Token: token, CAHash: tc.caHash, Name: name, DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(tc.t),
	})
	if err != nil {
		tc.t.Fatalf("join %s: %v", name, err)
	}
	tc.servers = append(tc.servers, srv)
	tc.dirs = append(tc.dirs, dir)
	return srv
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

func (tc *testCluster) leader() *Server {
	tc.t.Helper()
	var l *Server
	waitFor(tc.t, "a leader", 10*time.Second, func() error {
		for _, s := range tc.servers {
			if s != nil && s.IsLeader() {
				l = s
				return nil
			}
		}
		return errNoLeaderYet
	})
	return l
}

func (tc *testCluster) shutdown() {
	for i, s := range tc.servers {
		if s != nil {
			s.Shutdown()
			tc.servers[i] = nil
		}
	}
}
