package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/test/harness"
)

// TestRootClusterLifecycle is issue 2's end-to-end run: bootstrap plus two
// joins; a write through a follower; kill -9 of the leader; writes through
// every survivor; the killed server restarts and catches up; a full restart
// keeps every acknowledged write; the bootstrap server dies for good, is
// removed, and a fourth server joins through the survivors.
func TestRootClusterLifecycle(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var acked []string
	write := func(r *harness.Root) {
		t.Helper()
		id := fmt.Sprintf("e2e-%d", len(acked))
		cl := c.Client(r)
		if _, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: id, Reason: "e2e"}); err != nil {
			t.Fatalf("write %s through %s: %v", id, r.Name, err)
		}
		// The server written through shows the write at once.
		if _, found, err := cl.Revocation(ctx, "token", id, false); err != nil || !found {
			t.Fatalf("%s does not show its own write %s: found=%v err=%v", r.Name, id, found, err)
		}
		acked = append(acked, id)
	}
	checkAll := func(stage string) {
		t.Helper()
		for _, r := range c.Running() {
			revs, err := c.Client(r).Revocations(ctx, "token", true)
			if err != nil {
				t.Fatalf("%s: list on %s: %v", stage, r.Name, err)
			}
			have := map[string]bool{}
			for _, rev := range revs {
				have[rev.ID] = true
			}
			for _, id := range acked {
				if !have[id] {
					t.Errorf("%s: %s lost acknowledged write %s", stage, r.Name, id)
				}
			}
		}
	}

	leader := c.Leader(10 * time.Second)
	var follower *harness.Root
	for _, r := range c.Roots {
		if r != leader {
			follower = r
			break
		}
	}
	write(follower)

	killed := leader
	c.Kill(killed)
	start := time.Now()
	newLeader := c.Leader(10 * time.Second)
	t.Logf("kill -9 %s: %s leads after %s", killed.Name, newLeader.Name, time.Since(start).Round(time.Millisecond))
	for _, r := range c.Running() {
		write(r)
	}

	c.Restart(killed)
	hash := c.WaitConverged(30 * time.Second)
	t.Logf("%s caught up: all three at state hash %.16s", killed.Name, hash)
	checkAll("after catch-up")

	for _, r := range c.Roots {
		c.Terminate(r)
	}
	for _, r := range c.Roots {
		c.Restart(r)
	}
	c.Leader(15 * time.Second)
	checkAll("after full restart")
	c.WaitConverged(30 * time.Second)

	r1 := c.Roots[0]
	c.Kill(r1)
	c.Retry(ctx, "remove r1", func(cl *client.Client) error { return cl.RemoveServer(ctx, "r1") })
	c.Remove(r1)
	r4 := c.Join("r4")
	write(r4)
	checkAll("after r4 joined without r1")
	c.WaitConverged(30 * time.Second)
	st, err := c.Client(r4).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var voters []string
	for _, s := range st.Servers {
		if s.Suffrage == "voter" {
			voters = append(voters, s.Name)
		}
	}
	if strings.Join(voters, ",") != "r2,r3,r4" {
		t.Errorf("voters after replacing r1: %v, want r2,r3,r4", voters)
	}
}

// run runs the binary and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return 0, string(out)
}

// TestJoinRefusals: a wrong token, a wrong or malformed CA hash and an
// address where nothing listens each fail with one readable line, a non-zero
// exit and nothing left behind; the token they carried is still unspent, and
// a spent one-time token is refused.
func TestJoinRefusals(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := c.Client(c.Roots[0]).CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
	if err != nil {
		t.Fatal(err)
	}
	api := c.Roots[0].APIAddr
	join := func(token, hash, addr, dir string) (int, string) {
		return run(t, "root", "join", "--join", addr, "--token", token, "--ca-hash", hash,
			"--name", "rx", "--data-dir", dir, "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0")
	}
	cases := []struct {
		name, token, hash, join, want string
	}{
		{"wrong token", "kmjt.not-a-token", c.CAHash, api, "not known"},
		{"wrong CA hash", tok.Secret, "sha256:" + strings.Repeat("ab", 32), api, "--ca-hash"},
		{"malformed CA hash", tok.Secret, "md5:00", api, "ca-hash"},
		{"nothing listening", tok.Secret, c.CAHash, "127.0.0.1:1", "cannot reach"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			code, out := join(tc.token, tc.hash, tc.join, dir)
			if code == 0 {
				t.Fatalf("join succeeded:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; !strings.Contains(last, tc.want) {
				t.Errorf("last line %q does not mention %q; output:\n%s", last, tc.want, out)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				entries, _ := os.ReadDir(dir)
				t.Errorf("data dir left behind with %d entries", len(entries))
			}
		})
	}
	// The refused joins spent nothing: the token still admits a server.
	c.JoinWithToken("r2", tok.Secret)
	// Spent, it is refused.
	code, out := join(tok.Secret, c.CAHash, api, filepath.Join(t.TempDir(), "again"))
	if code == 0 || !strings.Contains(out, "used") {
		t.Errorf("second use of a one-time token: exit %d, output %q", code, out)
	}
}
