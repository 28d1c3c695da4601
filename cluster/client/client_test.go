package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity/trust"
)

func options(t *testing.T) cluster.Options {
	return cluster.Options{Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{t}})}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startServers bootstraps r1 and joins n-1 more; it returns the servers and
// r1's data directory (which holds the admin credential).
func startServers(t *testing.T, n int) ([]*cluster.Server, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := t.TempDir()
	r1, res, err := cluster.Bootstrap(cluster.BootstrapConfig{Network: "client.example", Name: "r1",
		DataDir: filepath.Join(base, "r1"), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: options(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r1.Shutdown() })
	servers := []*cluster.Server{r1}
	token := res.RootJoinToken
	for i := 2; i <= n; i++ {
		if token == "" {
			cl := newClient(t, r1, r1.DataDir())
			tok, err := cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
			if err != nil {
				t.Fatal(err)
			}
			token = tok.Secret
		}
		name := "r" + string(rune('0'+i))
		s, err := cluster.Join(ctx, cluster.JoinConfig{Join: r1.APIAddr(), Token: token, CAHash: res.CAHash, Name: name,
			DataDir: filepath.Join(base, name), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: options(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown() })
		servers = append(servers, s)
		token = ""
	}
	return servers, r1.DataDir()
}

func newClient(t *testing.T, s *cluster.Server, credDir string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Server: s.APIAddr(), CAFile: cluster.RootsPath(s.DataDir()), Credential: cluster.CredentialPath(credDir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestNewRefusesBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  client.Config
		want string
	}{
		{"no server", client.Config{}, "KEYMESH_SERVER"},
		{"plain http", client.Config{Server: "http://127.0.0.1:1", CAPEM: []byte("x")}, "https"},
		{"no CA", client.Config{Server: "127.0.0.1:1"}, "KEYMESH_CA_FILE"},
		{"CA file without PEM", client.Config{Server: "127.0.0.1:1", CAPEM: []byte("not pem")}, "no PEM"},
		{"missing credential", client.Config{Server: "127.0.0.1:1", CAPEM: testCA(t), Credential: "/nonexistent"}, "credential"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := client.New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}

func testCA(t *testing.T) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\nDgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow\nEjEQMA4GA1UEChMHQWNtZSBDbzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABD0d\n7VNhbWvZLWPuj/RtHFjvtJBEwOkhbN/BnnE8rnZR8+sbwnc/KhCk3FhnpHZnQz7B\n5aETbbIgmuvewdjvSBSjYzBhMA4GA1UdDwEB/wQEAwICpDATBgNVHSUEDDAKBggr\nBgEFBQcDATAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDmxvY2FsaG9zdDo1\nNDUzgg4xMjcuMC4wLjE6NTQ1MzAKBggqhkjOPQQDAgNIADBFAiEA2zpJEPQyz6/l\nWf86aX6PepsntZv2GYlA5UpabfT2EZICICpJ5h/iI+i341gBmLiAFQOyTDT+/wQc\n6MF9+Yw1Yy0t\n-----END CERTIFICATE-----\n")
}

func TestWritesAndConflictsThroughAFollower(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, admin := startServers(t, 2)
	var f *cluster.Server
	for _, s := range servers {
		if !s.IsLeader() {
			f = s
		}
	}
	if f == nil {
		t.Fatal("no follower")
	}
	cl := newClient(t, f, admin)

	// A write through the follower succeeds and is visible there at once.
	rev, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "cert", ID: "0a1b2c", Reason: "key-compromise"})
	if err != nil {
		t.Fatal(err)
	}
	// The serial is stored in its canonical form.
	if rev.Revocation.ID != "a1b2c" || rev.Index == 0 {
		t.Fatalf("revocation answer: %+v", rev)
	}
	if _, found, err := cl.Revocation(ctx, "cert", "a1b2c", false); err != nil || !found {
		t.Fatalf("read after write on the follower: found=%v err=%v", found, err)
	}
	// The same revocation again is a conflict, with the one error shape.
	_, err = cl.Revoke(ctx, api.RevokeRequest{Kind: "cert", ID: "0A:1B:2C"})
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != "exists" {
		t.Fatalf("second revoke: %v", err)
	}

	// Join tokens: the secret is shown once, the list never shows it.
	tok, err := cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Principal: "NODE", Uses: 3, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Secret, "kmjt.") || tok.Uses != 3 {
		t.Fatalf("created token: %+v", tok)
	}
	list, err := cl.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(list)
	if bytes.Contains(raw, []byte(tok.Secret)) {
		t.Fatal("the token list shows the secret or its hash")
	}
	if err := cl.RevokeJoinToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	err = cl.RevokeJoinToken(ctx, tok.ID)
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("revoking a revoked token: %v", err)
	}

	// Status of each server names the same leader and state.
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader == "" || len(st.Servers) != 2 || st.StateHash == "" {
		t.Fatalf("status: %+v", st)
	}
}

// TestTrustBlockingQuery: a blocking query returns when the state moves
// past the index it names, and not before.
func TestTrustBlockingQuery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers, admin := startServers(t, 1)
	cl := newClient(t, servers[0], admin)
	first, err := cl.Trust(ctx, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing changes: the query waits its whole wait and returns the same index.
	start := time.Now()
	same, err := cl.Trust(ctx, first.Index, 300*time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	if same.Index != first.Index || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("idle blocking query returned index %d after %s", same.Index, time.Since(start))
	}
	got := make(chan trust.Delta, 1)
	go func() {
		tr, err := cl.Trust(ctx, first.Index, 30*time.Second, false)
		if err != nil {
			t.Error(err)
		}
		got <- tr
	}()
	if _, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "wake-up"}); err != nil {
		t.Fatal(err)
	}
	select {
	case tr := <-got:
		if tr.Index <= first.Index {
			t.Fatalf("woke with index %d, not past %d", tr.Index, first.Index)
		}
		found := false
		for _, r := range tr.Put.Revocations {
			found = found || r.ID == "wake-up"
		}
		if !found {
			t.Fatal("the answer does not carry the new revocation")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking query did not wake on a change")
	}
}
