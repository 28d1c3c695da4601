package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/run"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/routing/rtr"
)

// Errors of the write path. Each says what the caller can do next.
var (
	// ErrNoLeader: no leader was known before the deadline.
	ErrNoLeader = errors.New("cluster: no leader; the cluster is electing one or has lost its quorum (check `keymesh root status`)")
	// ErrUnknownOutcome: the write was sent but its fate is unknown (the
	// leader was lost mid-way). Read it back before retrying.
	ErrUnknownOutcome = errors.New("cluster: the write may or may not have been committed; read it back before retrying")
	// ErrShutdown: the server is stopping.
	ErrShutdown = errors.New("cluster: server is shutting down")
)

// Server is one running root server. Make it with Bootstrap, Join or Open;
// stop it with Shutdown.
type Server struct {
	name    string
	network string
	opts    Options
	log     hclog.Logger
	dir     dataDir

	store  *fsm.Store
	node   *raftNode
	tls    *tlsIdentity
	issuer ca.Signer
	// caMu serialises the proposals that rewrite the CA record's sealed
	// parts: a seal rotation and the gossip keyring's steps.
	caMu sync.Mutex

	sealMu   sync.Mutex
	sealKey  []byte // the network's seal key in force (seal.key)
	sealNext []byte // one handed out by a rotation, not yet in force (seal.key.next)

	raftAddr string
	apiAddr  string
	joinAddr string

	peerClient *http.Client

	regLimit *sourceLimiter // registrations and collections per client address
	blocking *blockingLimiter
	// trustAnswers are the encoded answers of /v1/trust at the current
	// index, shared by the followers asking the same.
	trustAnswers trustAnswers
	signLimit    *rate.Limiter // certificates signed by this server

	crlMu      sync.Mutex
	crlDER     []byte
	crlSeen    uint64    // the state index up to which crlDER is current
	crlRefresh time.Time // when crlDER is built again regardless

	verifier *identity.Verifier // tokens, against the live replica
	authz    *policy.Authorizer // Cedar, with the replicated policies
	// policyVersion is the version of the policy set authz holds.
	policyVersion atomic.Uint64
	policyMu      sync.Mutex
	jwks          atomic.Pointer[jwksCache]

	// readyTerm is the term in which this server, as leader, has applied
	// every entry committed before its term (a barrier); consistent reads
	// are served only then.
	readyTerm atomic.Uint64

	metrics *metrics

	// Lifecycle. The constructors (Bootstrap, Join, Open) bind the
	// listeners and prepare the data directory; Run starts everything.
	raftLn, apiLn net.Listener
	rtrLn         net.Listener // nil without Options.RTRAddr
	rtr           *rtr.Server
	bootstrap     bool                            // Run starts Raft as the first voter
	settle        func(ctx context.Context) error // what Run does once Raft runs: genesis, becoming a voter
	cleanup       func()                          // undoes the data directory if Run fails before it is ready
	finishJoin    bool                            // Run makes the server a voter if it is not one (a join stopped mid-way)
	stopCtx       context.Context                 // Run's context: done when the server stops
	stop          <-chan struct{}                 // stopCtx.Done()
	ready         chan struct{}                   // closed once the server serves and is settled
	runMu         sync.Mutex
	cancelRun     context.CancelFunc
	ran           chan struct{} // closed when Run has returned
	// nudge asks the leader to tell the followers the commit index now
	// (see nudgeCommits); one pending request stands for any number.
	nudge chan struct{}
	// notices are the commit notices the leader owes followers that
	// forwarded writes (commitnotice.go).
	notices *commitNotices
}

// Name is the server's name, its Raft server id.
func (s *Server) Name() string { return s.name }

// Network is the network this server is a root of.
func (s *Server) Network() string { return s.network }

// APIAddr is the host:port of the HTTPS API.
func (s *Server) APIAddr() string { return s.apiAddr }

// RaftAddr is the host:port other servers dial for Raft (the advertised
// address).
func (s *Server) RaftAddr() string { return s.raftAddr }

// Store is the local replica of the replicated state, for reads.
func (s *Server) Store() *fsm.Store { return s.store }

// IsLeader reports whether this server currently leads.
func (s *Server) IsLeader() bool { return s.node.raft.State() == raft.Leader }

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return string(s.dir) }

// listeners binds the Raft and API addresses before anything is written, so
// that a port in use fails the command cleanly.
func listen(raftAddr, apiAddr string) (raftLn, apiLn net.Listener, err error) {
	raftLn, err = listenTCP(raftAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: listen for raft on %s: %w (is another server using it?)", raftAddr, err)
	}
	apiLn, err = listenTCP(apiAddr)
	if err != nil {
		raftLn.Close()
		return nil, nil, fmt.Errorf("cluster: listen for the API on %s: %w (is another server using it?)", apiAddr, err)
	}
	return raftLn, apiLn, nil
}

// bindPatience is how long listenTCP waits for an address in use.
var bindPatience = 3 * time.Second

// listenTCP listens on addr. An address in use is tried again for
// bindPatience: a server restarted at once after a crash may find its port
// held a moment longer, by a socket of the dead process the kernel has not
// closed yet or by a peer's dial that the kernel connected to itself on
// that port (Go closes such a connection and dials again).
func listenTCP(addr string) (net.Listener, error) {
	deadline := time.Now().Add(bindPatience)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond) // nothing to wait on: the kernel frees the port
	}
}

// newServer wires a server from its material; Raft and the API are started by
// start.
func newServer(dir dataDir, sf serverFile, m material, o Options) (*Server, error) {
	tid, err := newTLSIdentity(sf.Network, m.tlsCert, m.roots)
	if err != nil {
		return nil, err
	}
	s := &Server{
		name:     sf.Name,
		network:  sf.Network,
		opts:     o,
		log:      o.Logger.With("server", sf.Name),
		dir:      dir,
		store:    fsm.New(),
		tls:      tid,
		issuer:   m.issuer,
		sealKey:  m.sealKey,
		sealNext: m.sealNext,
		raftAddr: sf.advertise(),
		apiAddr:  sf.APIAddr,
		joinAddr: sf.JoinAddr,
		ready:    make(chan struct{}),
		ran:      make(chan struct{}),
		nudge:    make(chan struct{}, 1),
		notices:  newCommitNotices(),
	}
	// Raft peers and the servers this one forwards to are checked against
	// the replicated revocations: a removed server's revoked intermediate
	// ends its Raft connections too.
	check := func(chain []*x509.Certificate) error { return trust.CheckChain(s.store, chain) }
	tid.peerCheck.Store(&check)
	keys := &trust.Keys{View: func() trust.View { return s.store }}
	v, err := identity.NewVerifier(identity.VerifierConfig{Keys: keys, Revocations: keys,
		Anchors: identity.TrustAnchors{Accepted: []string{sf.Network}}, Audience: []string{api.Audience(sf.Network)}, Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	s.verifier, s.authz = v, policy.NewAuthorizer(nil)
	s.trustAnswers.sign = s.signBulletins
	s.metrics = newMetrics(s)
	l := o.Limits
	s.regLimit = newSourceLimiter(l.RegistrationRate, l.RegistrationBurst, l.MaxSources)
	s.signLimit = rate.NewLimiter(rate.Limit(l.SigningRate), l.SigningBurst)
	s.blocking = newBlockingLimiter(l.MaxBlockingQueries, l.MaxBlockingPerClient)
	s.peerClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tid.clientConfig(""),
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
	return s, nil
}

// Ready is closed once Run serves the API and the server is settled: the
// network's first state committed (bootstrap), a voter (join), started
// (open).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run runs the server until ctx ends or a part of it fails: Raft, the
// API, the leadership watcher, the pruner, the trust watcher, the CRL
// builder, and the settling of a new server (its first state, or becoming
// a voter). It returns nil when ctx ended. If it ends before the server of
// a Bootstrap or Join is ready, what the constructor wrote in the data
// directory is undone. Run is called once.
func (s *Server) Run(parent context.Context) (err error) {
	// A stop (parent ending, or Shutdown) first hands leadership over,
	// while the server still serves, and then ends ctx, what the server's
	// parts run under.
	stopping, requestStop := context.WithCancel(parent)
	defer requestStop()
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	s.runMu.Lock()
	if s.cancelRun != nil {
		s.runMu.Unlock()
		return errors.New("cluster: Run called twice")
	}
	s.cancelRun, s.stopCtx, s.stop = requestStop, ctx, ctx.Done()
	s.runMu.Unlock()
	defer close(s.ran)
	defer func() {
		// A bootstrap or join that did not finish (failed, or stopped
		// before it was ready) leaves nothing behind.
		if !s.isReady() && s.cleanup != nil {
			s.cleanup()
		}
	}()
	if err := s.listenRTR(); err != nil {
		s.apiLn.Close()
		s.raftLn.Close()
		return err
	}
	node, err := startRaft(s.dir.path(dirRaft), s.name, s.raftLn, s.raftAddr, s.tls, &raftFSM{store: s.store, applied: s.metrics.applied}, s.opts, s.bootstrap)
	if err != nil {
		s.apiLn.Close()
		s.raftLn.Close()
		if s.rtrLn != nil {
			s.rtrLn.Close()
		}
		return err
	}
	node.watchCrashes(s.name, s.opts.Raft, s.log, s.metrics.probed)
	s.node = node
	defer func() {
		if serr := node.shutdown(); err == nil && serr != nil {
			err = serr
		}
		s.peerClient.CloseIdleConnections()
	}()
	go func() {
		select {
		case <-stopping.Done():
			s.handOver()
			cancel()
		case <-ctx.Done():
		}
	}()
	var g run.Group
	g.Add("api", run.Func(s.serveAPI))
	g.Add("leadership", run.Func(s.watchLeadership))
	g.Add("pruner", run.Func(s.prune))
	g.Add("commit nudger", run.Func(s.nudgeCommits))
	g.Add("commit notices", run.Func(s.tellCommits))
	g.Add("trust watcher", run.Func(s.watchTrust))
	g.Add("crl builder", run.Func(s.buildCRLs))
	g.Add("gossip keyring", run.Func(s.runGossipKeys))
	g.Add("federation", run.Func(s.runFederation))
	if s.rtr != nil {
		g.Add("rtr", run.Func(s.serveRTR))
	}
	if s.finishJoin {
		g.Add("join", run.Func(func(ctx context.Context) error {
			if s.isVoter() {
				return nil
			}
			s.log.Info("this server is not a voter yet; finishing its join")
			if err := s.becomeVoter(ctx); err != nil && ctx.Err() == nil {
				// The operator can restart it; the rest of the server runs on.
				s.log.Error("could not become a voter", "error", err)
			}
			return nil
		}))
	}
	g.Add("settle", run.Func(func(ctx context.Context) error {
		if s.settle != nil {
			if err := s.settle(ctx); err != nil {
				return err
			}
		}
		close(s.ready)
		return nil
	}))
	return g.Run(ctx)
}

// handOverTimeout bounds a stopping leader's wait for its successor.
const handOverTimeout = 3 * time.Second

// handOver transfers leadership to another voter when this server leads
// and is stopping: a planned stop of the leader then costs the writes the
// moment the successor takes (it starts its election at once, without
// waiting out a heartbeat timeout). A transfer that fails or does not end
// within handOverTimeout leaves the election to the timeouts.
func (s *Server) handOver() {
	r := s.node.raft
	if r.State() != raft.Leader {
		return
	}
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	others := 0
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != s.name {
			others++
		}
	}
	if others == 0 {
		return
	}
	start := time.Now()
	f := r.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(handOverTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			s.log.Warn("stopping: leadership transfer failed; the others elect a leader when their timeouts pass", "error", err)
			return
		}
		_, to := r.LeaderWithID()
		s.log.Info("stopping: leadership handed over", "to", string(to), "took", time.Since(start).String())
	case <-t.C:
		s.log.Warn("stopping: no voter took leadership in time; the others elect one when their timeouts pass", "waited", handOverTimeout.String())
	}
}

func (s *Server) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Start runs the server in the background (Run) and returns once it is
// ready, or Run's error; Shutdown stops it. For programs that run servers
// side by side (keymesh dev, tests); a server of its own is Run.
func (s *Server) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		err := s.Run(context.WithoutCancel(ctx))
		if err != nil && s.isReady() {
			s.log.Error("root server stopped", "error", err)
		}
		errc <- err
	}()
	select {
	case <-s.ready:
		return nil
	case err := <-errc:
		if err == nil {
			err = ErrShutdown
		}
		return err
	case <-ctx.Done():
		s.Shutdown()
		return ctx.Err()
	}
}

// watchLeadership runs a barrier each time this server gains leadership, so
// that its replica holds every entry committed before its term.
func (s *Server) watchLeadership(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case leader := <-s.node.notify:
			if !leader {
				s.log.Info("lost leadership")
				continue
			}
			s.metrics.elected.Inc()
			term := s.node.raft.CurrentTerm()
			if err := s.node.raft.Barrier(s.opts.Limits.RequestTimeout).Error(); err != nil {
				s.log.Warn("barrier after election failed", "term", term, "error", err)
				continue
			}
			s.readyTerm.Store(term)
			s.log.Info("leading", "term", term, "applied_index", s.store.Index())
		}
	}
}

// prune proposes a PruneRevocations command every PruneInterval while this
// server leads. The command is cheap when nothing is due: it changes
// nothing and the state hash stays.
func (s *Server) prune(ctx context.Context) error {
	t := time.NewTicker(s.opts.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.node.raft.State() != raft.Leader {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.Limits.RequestTimeout)
		if _, err := s.Propose(pctx, fsm.MsgPruneRevocations, fsm.PruneRevocations{Issuance: true}); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning failed", "error", err)
		}
		cancel()
	}
}

// Shutdown stops a running server and waits until Run has returned; a
// server that never ran closes its listeners and undoes its data
// directory as a failed constructor would. It is safe to call more than
// once.
func (s *Server) Shutdown() error {
	s.runMu.Lock()
	cancel := s.cancelRun
	if cancel == nil {
		s.cancelRun = func() {}
		s.runMu.Unlock()
		s.apiLn.Close()
		s.raftLn.Close()
		if s.cleanup != nil && !s.isReady() {
			s.cleanup()
		}
		return nil
	}
	s.runMu.Unlock()
	cancel()
	if s.ran != nil {
		<-s.ran
	}
	return nil
}

// Propose commits one fsm command through the leader and returns the index it
// was applied at. A command the state machine rejected returns its
// *fsm.CommandError (use errors.Is with the fsm sentinels). See also
// ErrNoLeader and ErrUnknownOutcome.
func (s *Server) Propose(ctx context.Context, t fsm.MsgType, payload any) (uint64, error) {
	data, err := fsm.Encode(t, s.opts.Clock(), payload)
	if err != nil {
		return 0, fmt.Errorf("cluster: encode command: %w", err)
	}
	idx, err := s.applyEncoded(ctx, data)
	s.metrics.proposed(err)
	return idx, err
}

// applyEncoded applies a command locally when leading and forwards it to the
// leader otherwise, retrying only while the command cannot have been
// appended anywhere.
func (s *Server) applyEncoded(ctx context.Context, data []byte) (uint64, error) {
	for {
		var idx uint64
		var err error
		retry := true
		if s.node.raft.State() == raft.Leader {
			idx, err, retry = s.applyLocal(ctx, data)
		} else if addr := s.leaderAPI(); addr != "" {
			var resp applyResponse
			req := applyRequest{Command: data, LastIndex: s.node.raft.LastIndex()}
			retry, err = s.leaderCall(ctx, addr, "/v1/internal/apply", req, &resp)
			if err == nil {
				idx, err = resp.Index, resp.err()
				// Read-your-writes on this server.
				if werr := s.waitApplied(ctx, idx); werr != nil && err == nil {
					err = werr
				}
			}
		}
		if !retry {
			return idx, err
		}
		if werr := s.pause(ctx); werr != nil {
			if err != nil && !errors.Is(err, ErrNoLeader) {
				return 0, fmt.Errorf("%w (last attempt: %w)", ErrNoLeader, err)
			}
			return 0, ErrNoLeader
		}
	}
}

// applyLocal applies on this server as leader. retry reports that the
// command was not appended and may be sent again.
func (s *Server) applyLocal(ctx context.Context, data []byte) (idx uint64, err error, retry bool) {
	timeout := s.opts.Limits.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return 0, ctx.Err(), false
		}
	}
	f := s.node.raft.Apply(data, timeout)
	switch err := f.Error(); {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Not appended: sent again, to the leader there is then.
		return 0, err, true
	case errors.Is(err, raft.ErrRaftShutdown):
		return 0, ErrShutdown, false
	default:
		return 0, fmt.Errorf("%w: %w", ErrUnknownOutcome, err), false
	}
	res, ok := f.Response().(fsm.Result)
	if !ok {
		return 0, fmt.Errorf("cluster: state machine returned %T for a command", f.Response()), false
	}
	return res.Index, res.Err, false
}

// pause waits a little before the next attempt to find a leader.
func (s *Server) pause(ctx context.Context) error {
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return ErrShutdown
	case <-t.C:
		return nil
	}
}

// leaderAPI returns the API address of the current leader, or "" when none is
// known or it is this server.
func (s *Server) leaderAPI() string {
	_, id := s.node.raft.LeaderWithID()
	if id == "" || string(id) == s.name {
		return ""
	}
	rec, ok := s.store.Server(string(id))
	if !ok {
		return ""
	}
	return rec.APIAddr
}

// waitApplied blocks until the local replica has applied index idx.
func (s *Server) waitApplied(ctx context.Context, idx uint64) error {
	for s.store.Index() < idx {
		if _, err := s.store.WaitIndex(ctx, s.store.Index()); err != nil {
			return fmt.Errorf("cluster: committed at index %d but not yet applied here: %w", idx, err)
		}
	}
	return nil
}

// leaderCall runs one of the leader-only internal operations on this server
// when it leads and on the leader otherwise.
func (s *Server) onLeader(ctx context.Context, path string, in, out any, local func(context.Context) error) error {
	for {
		var err error
		retry := true
		if s.node.raft.State() == raft.Leader {
			err = local(ctx)
			retry = errors.Is(err, raft.ErrNotLeader)
		} else if addr := s.leaderAPI(); addr != "" {
			retry, err = s.leaderCall(ctx, addr, path, in, out)
		}
		if !retry {
			return err
		}
		if werr := s.pause(ctx); werr != nil {
			return ErrNoLeader
		}
	}
}

// consistentIndex returns an index that every write acknowledged before the
// call is at or below (the leader's applied index after it confirmed its
// leadership).
func (s *Server) consistentIndex(ctx context.Context) (uint64, error) {
	var resp readIndexResponse
	err := s.onLeader(ctx, "/v1/internal/read-index", struct{}{}, &resp, func(context.Context) error {
		idx, err := s.leaderReadIndex()
		resp.Index = idx
		return err
	})
	return resp.Index, err
}

// leaderReadIndex is the leader's side of a consistent read.
func (s *Server) leaderReadIndex() (uint64, error) {
	r := s.node.raft
	if r.State() != raft.Leader {
		return 0, raft.ErrNotLeader
	}
	if s.readyTerm.Load() != r.CurrentTerm() {
		return 0, raft.ErrNotLeader // the barrier of this term has not finished; caller retries
	}
	idx := s.store.Index()
	if err := r.VerifyLeader().Error(); err != nil {
		if errors.Is(err, raft.ErrLeadershipLost) {
			// It stopped leading while it checked: nothing was read, so
			// the caller asks again, the new leader if there is one.
			return 0, raft.ErrNotLeader
		}
		return 0, err
	}
	return idx, nil
}

// ConsistentRead waits until the local replica reflects every write
// acknowledged before the call.
func (s *Server) ConsistentRead(ctx context.Context) error {
	idx, err := s.consistentIndex(ctx)
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, idx)
}
