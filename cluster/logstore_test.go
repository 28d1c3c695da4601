package cluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/keymesh/keymesh/fsm"
)

// boltLog writes a raft-boltdb log into dir/raft.db as a keymesh before the
// write-ahead log left it: a vote, and entries first..last.
func boltLog(t *testing.T, dir string, first, last uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fileBoltLog)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for k, v := range map[string]uint64{"CurrentTerm": 7, "LastVoteTerm": 6} {
		if err := b.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set([]byte("LastVoteCand"), []byte("r2")); err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := first; i <= last; i++ {
		logs = append(logs, testEntry(i))
	}
	if err := b.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

func testEntry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1 + i/50, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, int(i%300)+1),
		AppendedAt: time.Unix(1700000000, int64(i)).UTC()}
}

// checkMigrated opens the log store of dir and checks it holds what boltLog
// wrote, and that raft.db is set aside.
func checkMigrated(t *testing.T, dir string, first, last uint64) {
	t.Helper()
	s, err := openLogStore(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, _ := s.FirstIndex(); f != first {
		t.Errorf("first index %d, want %d", f, first)
	}
	if l, _ := s.LastIndex(); l != last {
		t.Errorf("last index %d, want %d", l, last)
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := testEntry(i)
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d differs after the migration: %+v", i, got)
		}
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Errorf("CurrentTerm %d (%v), want 7", v, err)
	}
	if v, err := s.GetUint64([]byte("LastVoteTerm")); err != nil || v != 6 {
		t.Errorf("LastVoteTerm %d (%v), want 6", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "r2" {
		t.Errorf("LastVoteCand %q (%v), want r2", v, err)
	}
	if _, err := os.Stat(filepath.Join(dir, fileBoltLog)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("raft.db is still in place after the migration (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, fileBoltMigrate)); err != nil {
		t.Errorf("raft.db was not set aside as %s: %v", fileBoltMigrate, err)
	}
}

// TestBoltLogMigrates: a raft.db (a log truncated by a snapshot, so not
// from 1, and Raft's vote) is copied into the write-ahead log whole, the
// numbers with their encoding changed; opening it again changes nothing.
func TestBoltLogMigrates(t *testing.T) {
	dir := t.TempDir()
	boltLog(t, dir, 101, 700)
	checkMigrated(t, dir, 101, 700)
	checkMigrated(t, dir, 101, 700)
}

// TestInterruptedMigrationStartsAgain: a copy that stopped half way left
// wal.new; the next start throws it away and copies again.
func TestInterruptedMigrationStartsAgain(t *testing.T) {
	dir := t.TempDir()
	boltLog(t, dir, 1, 300)
	half, err := openWAL(filepath.Join(dir, dirWAL+".new"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := half.StoreLogs([]*raft.Log{testEntry(1), testEntry(2)}); err != nil {
		t.Fatal(err)
	}
	half.Close()
	checkMigrated(t, dir, 1, 300)
	if _, err := os.Stat(filepath.Join(dir, dirWAL+".new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("wal.new is left behind (%v)", err)
	}
}

// TestCompletedMigrationSetsBoltAside: a start that stopped after the WAL
// was renamed into place but before raft.db was set aside keeps the WAL.
func TestCompletedMigrationSetsBoltAside(t *testing.T) {
	dir := t.TempDir()
	boltLog(t, dir, 1, 50)
	if err := migrateBoltLog(dir, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, fileBoltMigrate), filepath.Join(dir, fileBoltLog)); err != nil {
		t.Fatal(err)
	}
	// The bolt file now holds more than the WAL: it must not be read again.
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fileBoltLog)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.StoreLog(testEntry(51)); err != nil {
		t.Fatal(err)
	}
	b.Close()
	checkMigrated(t, dir, 1, 50)
}

// TestRootRestartsFromABoltLog: a root whose data directory holds a
// raft.db, as keymesh left it before the write-ahead log, starts with the
// same state, and what it writes next is kept in the WAL.
func TestRootRestartsFromABoltLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, _, err := startBootstrap(ctx, BootstrapConfig{
		Network: "migrate.example", Name: "r1", DataDir: dir,
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revoke(ctx, srv, "before-the-move"); err != nil {
		t.Fatal(err)
	}
	hash, idx := hashIndex(srv.Store())
	term := srv.node.raft.CurrentTerm()
	if err := srv.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Turn the WAL back into the raft.db of an older keymesh.
	raftDir := filepath.Join(dir, dirRaft)
	w, err := openWAL(filepath.Join(raftDir, dirWAL), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, fileBoltLog)})
	if err != nil {
		t.Fatal(err)
	}
	if err := copyRaftStore(b, w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b.Close()
	if err := os.RemoveAll(filepath.Join(raftDir, dirWAL)); err != nil {
		t.Fatal(err)
	}

	again, err := startOpen(ctx, dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	if err := again.waitApplied(ctx, idx); err != nil {
		t.Fatal(err)
	}
	h, i := hashIndex(again.Store())
	t.Logf("index %d before, %d after", idx, i)
	if i == idx && h != hash {
		t.Fatalf("state hash %s after the migration, %s before", h, hash)
	}
	if _, ok := again.Store().Revoked(fsm.RevocationToken, "before-the-move"); !ok {
		t.Fatal("the restarted root lost a revocation in the migration")
	}
	if got := again.node.raft.CurrentTerm(); got < term {
		t.Fatalf("term %d after the migration, %d before: the vote was lost", got, term)
	}
	if _, err := os.Stat(filepath.Join(raftDir, fileBoltMigrate)); err != nil {
		t.Fatalf("raft.db was not set aside: %v", err)
	}
	if _, err := revoke(ctx, again, "after-the-move"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLogStoreAppend appends one entry of 256 bytes at a time, the
// size of a revocation command, to raft-boltdb and to the write-ahead log,
// beside the physical limit: a 256-byte write and fsync of a plain file.
// The three are interleaved in each iteration so they share the noise.
func BenchmarkLogStoreAppend(b *testing.B) {
	dir := b.TempDir()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fileBoltLog)})
	if err != nil {
		b.Fatal(err)
	}
	defer bolt.Close()
	w, err := openWAL(filepath.Join(dir, dirWAL), hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	f, err := os.OpenFile(filepath.Join(dir, "raw"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte{0x5a}, 256)
	var tRaw, tBolt, tWAL time.Duration
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		l := &raft.Log{Index: uint64(i) + 1, Term: 1, Type: raft.LogCommand, Data: data}
		if err := bolt.StoreLogs([]*raft.Log{l}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := w.StoreLogs([]*raft.Log{l}); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		tRaw, tBolt, tWAL = tRaw+t1.Sub(t0), tBolt+t2.Sub(t1), tWAL+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tRaw.Microseconds())/n, "raw-µs/op")
	b.ReportMetric(float64(tBolt.Microseconds())/n, "boltdb-µs/op")
	b.ReportMetric(float64(tWAL.Microseconds())/n, "wal-µs/op")
	b.ReportMetric(float64(tRaw)/float64(tWAL), "wal-ratio")
	b.ReportMetric(float64(tRaw)/float64(tBolt), "boltdb-ratio")
}
