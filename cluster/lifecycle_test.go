package cluster

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
)

func bootstrapConfig(t *testing.T, dir string) BootstrapConfig {
	return BootstrapConfig{Network: "life.example", Name: "r1", DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(t)}
}

// TestConstructorStartsNothing: Bootstrap binds its ports and writes its
// keys, and runs nothing: no Raft data, no state, and a Shutdown before
// Run frees the ports and leaves the data directory empty.
func TestConstructorStartsNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r1")
	srv, _, err := Bootstrap(bootstrapConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, dirRaft)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the constructor made Raft data: %v", err)
	}
	if srv.Store().Index() != 0 || srv.node != nil {
		t.Fatal("the constructor started Raft")
	}
	select {
	case <-srv.Ready():
		t.Fatal("ready before Run")
	default:
	}
	raftAddr, apiAddr := srv.RaftAddr(), srv.APIAddr()
	if err := srv.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{raftAddr, apiAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s still bound after Shutdown: %v", addr, err)
		}
		ln.Close()
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bootstrap that never ran left %s: %v", dir, err)
	}
}

// TestGenesisIsOneCommand: the first state of a network (CA, issuer,
// server, anchor, root-join token, admin key) is committed at one index.
func TestGenesisIsOneCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, _, err := startBootstrap(ctx, bootstrapConfig(t, filepath.Join(t.TempDir(), "r1")))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	st := srv.Store()
	ca, ok := st.CA("life.example")
	if !ok {
		t.Fatal("no CA")
	}
	at := ca.CreateIndex
	var idx []uint64
	for _, i := range st.Issuers() {
		idx = append(idx, i.CreateIndex)
	}
	for _, s := range st.Servers() {
		idx = append(idx, s.CreateIndex)
	}
	for _, a := range st.TrustAnchors() {
		idx = append(idx, a.CreateIndex)
	}
	for _, tok := range st.JoinTokens() {
		idx = append(idx, tok.CreateIndex)
	}
	for _, k := range st.JWKS() {
		idx = append(idx, k.CreateIndex)
	}
	if len(idx) != 5 {
		t.Fatalf("the first state has %d records besides the CA, want 5 (issuer, server, anchor, token, admin key)", len(idx))
	}
	for _, i := range idx {
		if i != at {
			t.Fatalf("records of the first state at indexes %v, the CA at %d: not one command", idx, at)
		}
	}
}

// TestRunStoppedBeforeReadyUndoes: a bootstrap whose Run ends before the
// server is ready leaves nothing in the data directory; Run is called
// once.
func TestRunStoppedBeforeReadyUndoes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r1")
	srv, _, err := Bootstrap(bootstrapConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatalf("Run with an ended context: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bootstrap stopped before it was ready left %s: %v", dir, err)
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Fatal("Run ran twice")
	}
}

// TestRunReturnsWhenContextEnds: Run returns nil once its context ends,
// and the server restarts from its data directory.
func TestRunReturnsWhenContextEnds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r1")
	srv, _, err := Bootstrap(bootstrapConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	idx := srv.Store().Index()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after its context ended: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	again, err := startOpen(ctx2, dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	if err := again.waitApplied(ctx2, idx); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Store().CA("life.example"); !ok {
		t.Fatal("the restarted server lost its state")
	}
	if rec, ok := again.Store().Server("r1"); !ok || rec.Status != fsm.ServerVoter || again.Store().Network() != "life.example" {
		t.Fatal("the restarted server lost its record")
	}
}

// TestBootstrapASN: the AS number of a bootstrap is in the genesis CA
// record; one fsm.CheckASN refuses fails the bootstrap before anything is
// written.
func TestBootstrapASN(t *testing.T) {
	for _, asn := range []uint32{23456, 65535, 4294967295} {
		dir := filepath.Join(t.TempDir(), "r1")
		cfg := bootstrapConfig(t, dir)
		cfg.ASN = asn
		if srv, _, err := Bootstrap(cfg); !errors.Is(err, fsm.ErrASN) {
			if srv != nil {
				srv.Shutdown()
			}
			t.Fatalf("AS %d: %v, want fsm.ErrASN", asn, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused bootstrap left %s: %v", dir, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := bootstrapConfig(t, filepath.Join(t.TempDir(), "r1"))
	cfg.ASN = 64500
	srv, _, err := startBootstrap(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if rec, ok := srv.Store().CA("life.example"); !ok || rec.ASN != 64500 {
		t.Fatalf("genesis CA record %+v %v", rec, ok)
	}
}
