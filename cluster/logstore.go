package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/migrate"
)

// The Raft log and stable store of a root server is a write-ahead log
// (hashicorp/raft-wal) in raft/wal/: one fsync per append, where boltdb's
// copy-on-write B-tree pays two (the data pages, then the meta page). Each
// root stores every entry before it counts, the leader's and a follower's
// store in sequence, so the second fsync was a quarter of a write's time.
//
// Data directories made before it hold raft/raft.db (raft-boltdb). The first
// start of a newer keymesh copies that log and Raft's vote into a new WAL,
// and only once the copy is complete on disk renames raft.db to
// raft.db.migrated; a start that stops half way begins the copy again.
const (
	dirWAL          = "wal"
	fileBoltLog     = "raft.db"
	fileBoltMigrate = "raft.db.migrated"

	// walSegmentSize is the size a WAL segment file is preallocated to and
	// rotated at. raft-wal's default is 64 MiB; a root's log is truncated at
	// every snapshot (8,192 entries by default, a few hundred bytes each),
	// so 16 MiB keeps a few segments at most without a rotation per burst.
	walSegmentSize = 16 << 20
)

// The keys hashicorp/raft keeps in its stable store: the current term and
// the last vote. A migration copies them, or the root could vote twice in a
// term. The numbers go through GetUint64 and SetUint64: raft-boltdb encodes
// them big-endian, raft-wal little-endian.
var (
	raftStableUint64s = [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm")}
	raftStableBytes   = [][]byte{[]byte("LastVoteCand")}
)

// logStore is what Raft stores its log and its vote in.
type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// openLogStore opens the WAL in dir (Raft's directory), migrating a boltdb
// log that is there first.
func openLogStore(dir string, log hclog.Logger) (logStore, error) {
	walDir := filepath.Join(dir, dirWAL)
	bolt := filepath.Join(dir, fileBoltLog)
	_, err := os.Stat(walDir)
	switch {
	case err == nil:
		// A migration that completed but stopped before the rename.
		if _, berr := os.Stat(bolt); berr == nil {
			if err := os.Rename(bolt, filepath.Join(dir, fileBoltMigrate)); err != nil {
				return nil, fmt.Errorf("cluster: set aside the migrated raft log %s: %w", bolt, err)
			}
		}
	case errors.Is(err, os.ErrNotExist):
		if _, berr := os.Stat(bolt); berr == nil {
			if err := migrateBoltLog(dir, log); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("cluster: raft log %s: %w", walDir, err)
	}
	return openWAL(walDir, log)
}

func openWAL(walDir string, log hclog.Logger) (*wal.WAL, error) {
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: raft log directory: %w", err)
	}
	w, err := wal.Open(walDir, wal.WithLogger(log.Named("wal")), wal.WithSegmentSize(walSegmentSize))
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log %s: %w (if the directory is damaged, remove this root's data directory and join it again)", walDir, err)
	}
	return w, nil
}

// migrateBoltLog copies raft.db in dir into a new WAL in dir/wal. It builds
// the WAL in dir/wal.new and renames it into place once it is closed, so the
// WAL is there only when it is whole.
func migrateBoltLog(dir string, log hclog.Logger) error {
	bolt := filepath.Join(dir, fileBoltLog)
	tmp := filepath.Join(dir, dirWAL+".new")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("cluster: clear an earlier migration %s: %w", tmp, err)
	}
	src, err := raftboltdb.New(raftboltdb.Options{Path: bolt})
	if err != nil {
		return fmt.Errorf("cluster: open the raft log %s to migrate it: %w", bolt, err)
	}
	defer src.Close()
	dst, err := openWAL(tmp, log)
	if err != nil {
		return err
	}
	if err := copyRaftStore(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("cluster: migrate the raft log %s: %w", bolt, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("cluster: migrate the raft log %s: %w", bolt, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, dirWAL)); err != nil {
		return fmt.Errorf("cluster: migrate the raft log: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("cluster: migrate the raft log: %w", err)
	}
	first, _ := src.FirstIndex()
	last, _ := src.LastIndex()
	if err := os.Rename(bolt, filepath.Join(dir, fileBoltMigrate)); err != nil {
		return fmt.Errorf("cluster: set aside the migrated raft log %s: %w", bolt, err)
	}
	log.Info("raft log moved from boltdb to the write-ahead log", "first_index", first, "last_index", last,
		"old", filepath.Join(dir, fileBoltMigrate))
	return nil
}

// copyRaftStore copies Raft's stable keys and every log entry of src to dst.
func copyRaftStore(dst, src logStore) error {
	for _, k := range raftStableUint64s {
		v, err := src.GetUint64(k)
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stable key %s: %w", k, err)
		}
		if err := dst.SetUint64(k, v); err != nil {
			return fmt.Errorf("stable key %s: %w", k, err)
		}
	}
	for _, k := range raftStableBytes {
		v, err := src.Get(k)
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stable key %s: %w", k, err)
		}
		if err := dst.Set(k, v); err != nil {
			return fmt.Errorf("stable key %s: %w", k, err)
		}
	}
	first, err := src.FirstIndex()
	if err != nil {
		return err
	}
	last, err := src.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 || first > last {
		return nil
	}
	return migrate.CopyLogs(context.Background(), dst, src, 1<<20, nil)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
