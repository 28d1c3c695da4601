package cluster

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/fsm"
)

// raftFSM adapts the pure fsm.Store to raft.FSM. It is the only place where
// the store meets Raft; the store never sees a raft type.
type raftFSM struct {
	store   *fsm.Store
	applied func(fsm.Result) // optional: sees every applied command
}

var _ raft.FSM = (*raftFSM)(nil)

// Apply returns an fsm.Result for commands and nil for Raft's own entries.
func (f *raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	res := f.store.Apply(l.Index, l.Data)
	if f.applied != nil {
		f.applied(res)
	}
	return res
}

func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	sn, err := f.store.Snapshot()
	if err != nil {
		return nil, err
	}
	return &raftSnapshot{sn: sn}, nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

type raftSnapshot struct{ sn *fsm.Snapshot }

func (s *raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.sn.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *raftSnapshot) Release() { s.sn.Release() }

// raftNode bundles the Raft instance with the stores and transport it owns.
type raftNode struct {
	raft      *raft.Raft
	transport *raft.NetworkTransport
	stream    *streamLayer
	logs      logStore
	notify    chan bool
	watch     *crashWatch // nil until watchCrashes, or when it is off
}

// raftConfig turns Options into a raft.Config for the server id.
func raftConfig(id string, o Options, log hclog.Logger) *raft.Config {
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(id)
	cfg.HeartbeatTimeout = o.Raft.Heartbeat
	cfg.ElectionTimeout = o.Raft.Election
	cfg.LeaderLeaseTimeout = o.Raft.LeaderLease
	cfg.CommitTimeout = o.Raft.Commit
	cfg.SnapshotThreshold = o.SnapshotThreshold
	cfg.SnapshotInterval = o.SnapshotInterval
	cfg.BatchApplyCh = true
	cfg.Logger = log
	return cfg
}

// startRaft opens the log store (logstore.go) and snapshots in dir and starts Raft on
// the TLS stream layer. With bootstrap, the cluster is first initialised with
// this server as the only voter.
func startRaft(dir string, id string, ln net.Listener, advertise string, tid *tlsIdentity, f raft.FSM, o Options, bootstrap bool) (*raftNode, error) {
	log := o.Logger.Named("raft").With("server", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: raft directory: %w", err)
	}
	logs, err := openLogStore(dir, log)
	if err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, o.SnapshotRetain, log)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	stream := newStreamLayer(ln, advertise, tid)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  log,
		// No pipelined replication: with it, hashicorp/raft v1.7.3 can
		// wedge the replication to a follower for good when that follower
		// answers an AppendEntries with Success=false (its decoder stops,
		// one more send then parks on a channel nobody reads), and the
		// leader's Shutdown then never returns. make test saw it once
		// (TestSealRotationReachesAServerThatWasDown, a follower stopped
		// and restarted). One AppendEntries in flight per follower, each
		// carrying a batch, costs nothing measurable at 64 writers.
		MaxRPCsInFlight: 1,
	})
	cfg := raftConfig(id, o, log)
	notify := make(chan bool, 16)
	cfg.NotifyCh = notify
	if bootstrap {
		conf := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(id), Address: trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(cfg, logs, logs, snaps, trans, conf); err != nil {
			trans.Close()
			logs.Close()
			return nil, fmt.Errorf("cluster: bootstrap raft: %w", err)
		}
	}
	r, err := raft.NewRaft(cfg, f, logs, logs, snaps, trans)
	if err != nil {
		trans.Close()
		logs.Close()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	return &raftNode{raft: r, transport: trans, stream: stream, logs: logs, notify: notify}, nil
}

func (n *raftNode) shutdown() error {
	if n.watch != nil {
		n.watch.close()
	}
	err := n.raft.Shutdown().Error()
	n.transport.Close()
	if cerr := n.logs.Close(); err == nil {
		err = cerr
	}
	return err
}

// hashIndex returns the state hash together with the index it belongs to.
// Index only grows and the hash cache is cleared before the index moves, so
// equal indexes before and after the hash mean the hash is of that index.
func hashIndex(st *fsm.Store) (string, uint64) {
	for {
		i := st.Index()
		h := st.Hash()
		if st.Index() == i {
			return h, i
		}
	}
}
