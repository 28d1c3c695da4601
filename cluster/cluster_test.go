package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func revoke(ctx context.Context, s *Server, id string) (uint64, error) {
	return s.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{
		Kind: fsm.RevocationKind("token"), ID: id, Reason: "test", PruneAfter: time.Now().Add(time.Hour)}})
}

func follower(tc *testCluster) *Server {
	l := tc.leader()
	for _, s := range tc.servers {
		if s != nil && s != l {
			return s
		}
	}
	tc.t.Fatal("no follower")
	return nil
}

// TestClusterSurvivesLeaderLoss is the in-process twin of the end-to-end
// test: three servers, a write through a follower, the leader stops, writes
// go on through the survivors, the stopped server comes back and catches up,
// and every write survives a full restart.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tc := newTestCluster(t, 3)

	var written []string
	write := func(s *Server) {
		t.Helper()
		id := fmt.Sprintf("jti-%d", len(written))
		idx, err := revoke(ctx, s, id)
		if err != nil {
			t.Fatalf("write %s through %s: %v", id, s.Name(), err)
		}
		// Read-your-writes on the server written through.
		if _, ok := s.Store().Revoked("token", id); !ok || s.Store().Index() < idx {
			t.Fatalf("%s does not show its own write %s at %d", s.Name(), id, idx)
		}
		written = append(written, id)
	}
	write(follower(tc))

	old := tc.leader()
	var oldIdx int
	for i, s := range tc.servers {
		if s == old {
			oldIdx = i
		}
	}
	if err := old.Shutdown(); err != nil {
		t.Fatalf("shutdown leader: %v", err)
	}
	tc.servers[oldIdx] = nil
	start := time.Now()
	nl := tc.leader()
	t.Logf("new leader %s after %s", nl.Name(), time.Since(start))
	for _, s := range tc.servers {
		if s != nil {
			write(s)
		}
	}

	srv, err := startOpen(ctx, tc.dirs[oldIdx], testOptions(t))
	if err != nil {
		t.Fatalf("restart %s: %v", tc.dirs[oldIdx], err)
	}
	tc.servers[oldIdx] = srv
	tc.converged(ctx)

	tc.shutdown()
	for i, dir := range tc.dirs {
		s, err := startOpen(ctx, dir, testOptions(t))
		if err != nil {
			t.Fatalf("restart %s: %v", dir, err)
		}
		tc.servers[i] = s
	}
	l := tc.leader()
	if err := l.ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range tc.servers {
		if err := s.ConsistentRead(ctx); err != nil {
			t.Fatalf("consistent read on %s: %v", s.Name(), err)
		}
		for _, id := range written {
			if _, ok := s.Store().Revoked("token", id); !ok {
				t.Errorf("%s lost acknowledged write %s after restart", s.Name(), id)
			}
		}
	}
	tc.converged(ctx)
}

func TestProposeRejectionCrossesForwarding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tc := newTestCluster(t, 2)
	f := follower(tc)
	if _, err := revoke(ctx, f, "dup"); err != nil {
		t.Fatal(err)
	}
	before, _ := hashIndex(f.Store())
	_, err := revoke(ctx, f, "dup")
	if !errors.Is(err, fsm.ErrExists) {
		t.Fatalf("second revoke through a follower: got %v, want fsm.ErrExists", err)
	}
	var ce *fsm.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("rejection is %T, want *fsm.CommandError", err)
	}
	after, _ := hashIndex(f.Store())
	if before != after {
		t.Fatal("a rejected command changed the state")
	}
}

func TestBootstrapRefusesUsedDataDir(t *testing.T) {
	ctx := context.Background()
	tc := newTestCluster(t, 1)
	_, _, err := startBootstrap(ctx, BootstrapConfig{Network: "other.example", Name: "x", DataDir: tc.dirs[0],
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(t)})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second bootstrap into a used data dir: got %v, want ErrDataDirInUse", err)
	}
	if _, err := os.Stat(CredentialPath(tc.dirs[0])); err != nil {
		t.Fatalf("the refused bootstrap touched the existing server: %v", err)
	}
}

// TestLeaderPrunes: a revocation past its prune-after time, and an issued
// certificate past its not-after, are dropped by the leader's periodic
// prune, which stamps its command with the server's clock (a fake one
// here, moved past the first certificate's end).
func TestLeaderPrunes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clock := newFakeClock(time.Now())
	opts := testOptions(t)
	opts.PruneInterval = 50 * time.Millisecond
	opts.Clock = clock.Now
	opts.Limits.NodeCertValidity = 10 * time.Minute
	srv, _, err := startBootstrap(ctx, BootstrapConfig{Network: "prune.example", Name: "r1", DataDir: t.TempDir() + "/r1",
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if _, err := srv.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: "short",
		PruneAfter: clock.Now().Add(5 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: "long",
		PruneAfter: clock.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	register := func(id string) string { return registerWithToken(ctx, t, srv, "prune.example", id) }
	early := register("n1")
	clock.Add(6 * time.Minute)
	late := register("n2")
	clock.Add(6 * time.Minute) // n1's certificate has expired, n2's has not
	waitState(t, srv, "the leader's prune", 10*time.Second, func() bool {
		_, revoked := srv.Store().Revoked(fsm.RevocationToken, "short")
		_, issued := srv.Store().Issued("r1", early)
		return !revoked && !issued
	})
	if _, ok := srv.Store().Revoked(fsm.RevocationToken, "long"); !ok {
		t.Fatal("a revocation not yet due was pruned")
	}
	if _, ok := srv.Store().Issued("r1", late); !ok {
		t.Fatal("a certificate not yet expired was pruned")
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestLookupWithoutLeaderIsNotNotFound: a follower that does not find a
// join token locally and cannot reach a leader says so (503), instead of
// calling a token that may well exist unknown (found by the chaos suite).
func TestLookupWithoutLeaderIsNotNotFound(t *testing.T) {
	tc := newTestCluster(t, 2)
	f := follower(tc)
	l := tc.leader()
	for i, s := range tc.servers {
		if s == l {
			s.Shutdown()
			tc.servers[i] = nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, err := f.register(ctx, api.RegisterRequest{CSR: testCSR(t), NodeID: "n1", Token: "kmjt.made-up"}, "")
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("registration with an unknown token and no leader: %v, want ErrNoLeader", err)
	}
	var ae *api.APIError
	if errors.As(err, &ae) {
		t.Fatalf("answered %d %s", ae.Status, ae.Code)
	}
}

func testCSR(t *testing.T) []byte { return testCSRFor(t, "test.keymesh.example", "n1") }

func testCSRFor(t *testing.T, network, id string) []byte {
	t.Helper()
	k, _ := ca.GenerateKey(ca.KeyP256, nil)
	csr, err := ca.NewCSR(k, ca.Identity{Network: network, Kind: ca.KindNode, Name: id}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestJoinThroughAFollower: a new server given a follower's address
// becomes a voter (the follower forwards its add-voter call to the leader).
func TestJoinThroughAFollower(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tc := newTestCluster(t, 2)
	f := follower(tc)
	s := tc.joinVia(ctx, 3, f.APIAddr())
	if !s.isVoter() {
		t.Fatal("joined through a follower but is not a voter")
	}
	tc.converged(ctx)
}

// TestExpiredNodeRegistersAgain: a node id stays taken while its certificate
// is valid; once the certificate has expired (the node cannot renew any
// more) the node registers again under its id.
func TestExpiredNodeRegistersAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var skew atomic.Int64
	opts := testOptions(t)
	opts.Clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	srv, _, err := startBootstrap(ctx, BootstrapConfig{Network: "expiry.example", Name: "r1", DataDir: t.TempDir() + "/r1",
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	token := func() string {
		secret, tok, err := srv.newJoinToken(api.CreateJoinTokenRequest{Kind: "node", Uses: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Propose(ctx, fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: tok}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	first, _, err := srv.register(ctx, api.RegisterRequest{CSR: testCSR(t), NodeID: "n1", Token: token()}, "")
	if err != nil {
		t.Fatal(err)
	}
	firstSerial := first.Registration.Serial

	// While the certificate is valid the id is taken, and the refused
	// registration spends nothing.
	again := token()
	before := srv.Store().Hash()
	_, _, err = srv.register(ctx, api.RegisterRequest{CSR: testCSR(t), NodeID: "n1", Token: again}, "")
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "already active, with a certificate valid until") {
		t.Fatalf("registration of an active node id: %v", err)
	}
	if srv.Store().Hash() != before {
		t.Fatal("the refused registration changed the state")
	}

	skew.Store(int64(25 * time.Hour)) // the 24 h certificate has expired
	second, status, err := srv.register(ctx, api.RegisterRequest{CSR: testCSR(t), NodeID: "n1", Token: token()}, "")
	if err != nil || status != http.StatusCreated {
		t.Fatalf("registration of a node whose certificate expired: %d %v", status, err)
	}
	n, _ := srv.Store().Node("n1")
	if n.Status != fsm.NodeActive || n.CertSerial != second.Registration.Serial || n.PrevSerial != firstSerial {
		t.Fatalf("node record %+v after registering again (first serial %s)", n, firstSerial)
	}
}

// TestSealRotationReachesAServerThatWasDown: the seal key is rotated while
// r3 is down (two of three voters hold the new key, a majority); once r3
// is back it opens the new sealed root with a key it asks a member for,
// and admits a new server with it. A member that holds no key that opens
// the root cannot sign a thing.
func TestSealRotationReachesAServerThatWasDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tc := newTestCluster(t, 3)
	r3dir := tc.dirs[2]
	tc.servers[2].Shutdown()
	tc.servers[2] = nil
	leader := tc.leader()
	before := leader.currentSealKey()
	keysBefore, err := leader.gossipKeyring(true)
	if err != nil || len(keysBefore.Keys) == 0 {
		t.Fatalf("the gossip keyring before: %+v %v", keysBefore, err)
	}
	if err := leader.rotateSealKey(ctx); err != nil {
		t.Fatal(err)
	}
	// The gossip keys were sealed again under the new key: the same keys.
	rec, _ := leader.Store().CA(leader.Network())
	for i, k := range rec.GossipKeys {
		raw, err := ca.Open(leader.currentSealKey(), k.Sealed, gossipKeyAAD(leader.Network()))
		if err != nil || !bytes.Equal(raw, keysBefore.Keys[i].Key) {
			t.Fatalf("gossip key %s after the seal rotation: %v", k.ID, err)
		}
		if _, err := ca.Open(before, k.Sealed, gossipKeyAAD(leader.Network())); err == nil {
			t.Fatalf("gossip key %s still opens with the old seal key", k.ID)
		}
	}
	after := leader.currentSealKey()
	if bytes.Equal(before, after) {
		t.Fatal("the seal key did not change")
	}
	for _, s := range tc.servers[:2] {
		rec, _ := s.Store().CA(s.Network())
		if _, err := ca.OpenSigner(s.currentSealKey(), rec.SealedKey, s.Network()); err != nil && s == leader {
			t.Fatalf("%s cannot open the new sealed root: %v", s.Name(), err)
		}
	}
	old, err := ca.ReadSealKeyFile(filepath.Join(r3dir, "seal.key"))
	if err != nil || !bytes.Equal(old, before) {
		t.Fatalf("r3 was down and should hold the old key: %v", err)
	}
	r3, err := startOpen(ctx, r3dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	tc.servers[2] = r3
	r3.waitApplied(ctx, leader.Store().Index())
	tc.joinVia(ctx, 4, r3.APIAddr())
	got, err := ca.ReadSealKeyFile(filepath.Join(r3dir, "seal.key"))
	if err != nil || !bytes.Equal(got, after) {
		t.Fatalf("r3 did not take up the new seal key: %v", err)
	}
}

// TestCRLBuildsOnlyForWhatItLists: token and key revocations and new
// registrations leave the CRL as it is, without a build (a build reads every
// certificate and node revocation and signs); a certificate's revocation
// builds it, with the serial listed.
func TestCRLBuildsOnlyForWhatItLists(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, _, err := startBootstrap(ctx, BootstrapConfig{Network: "crl.example", Name: "r1", DataDir: t.TempDir() + "/r1",
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: testOptions(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	register := func(id string) string { return registerWithToken(ctx, t, srv, "crl.example", id) }
	revoke := func(kind fsm.RevocationKind, id string) {
		t.Helper()
		if _, err := srv.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: kind, ID: id}}); err != nil {
			t.Fatal(err)
		}
	}
	serial := register("n1")
	before, err := srv.crl()
	if err != nil {
		t.Fatal(err)
	}
	builds := counterValue(t, srv.metrics.crlBuilds)
	for i := range 20 {
		revoke(fsm.RevocationToken, fmt.Sprint("jti-", i))
		revoke(fsm.RevocationKey, fmt.Sprint("kid-", i))
	}
	register("n2")
	after, err := srv.crl()
	if err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, srv.metrics.crlBuilds); got != builds || !bytes.Equal(after, before) {
		t.Fatalf("token and key revocations and a registration built the CRL %v times", got-builds)
	}
	revoke(fsm.RevocationCert, serial)
	der, err := srv.crl()
	if err != nil {
		t.Fatal(err)
	}
	if counterValue(t, srv.metrics.crlBuilds) == builds {
		t.Fatal("a certificate's revocation did not build the CRL")
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || fsm.FormatSerial(crl.RevokedCertificateEntries[0].SerialNumber) != serial {
		t.Fatalf("CRL lists %d entries, want the revoked serial %s", len(crl.RevokedCertificateEntries), serial)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestForwardedWriteIsNotHeldByTheCommitTimeout: a write sent to a follower
// answers once the follower has applied it, and the leader tells that
// follower the commit index at once with a commit notice (commitnotice.go),
// not at Raft's commit timeout and without a barrier entry. With that
// timeout at 1 s here, each write through a follower would take at least
// 1 s without the notice: ten of them must take less than one timeout in
// all, every one told by a notice, and the leader's log must hold no
// barrier between them.
func TestForwardedWriteIsNotHeldByTheCommitTimeout(t *testing.T) {
	const commit = time.Second
	tc := newTestClusterWith(t, 3, func(o *Options) { o.Raft.Commit = commit })
	leader := tc.leader()
	follower := tc.follower(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	told := func(result string) float64 { return counterValue(t, leader.metrics.notices.WithLabelValues(result)) }
	noticesIdle(t, leader)
	toldBefore, barriersBefore := told(noticeTold), told(noticeBarrier)
	first := leader.node.raft.LastIndex() + 1
	start := time.Now()
	for i := range 10 {
		idx, err := follower.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: fmt.Sprint("fwd-", i)}})
		if err != nil {
			t.Fatalf("write %d through the follower: %v", i, err)
		}
		if got := follower.Store().Index(); got < idx {
			t.Fatalf("write %d answered at index %d before the follower applied it (%d)", i, idx, got)
		}
		if _, ok := follower.Store().Revoked(fsm.RevocationToken, fmt.Sprint("fwd-", i)); !ok {
			t.Fatalf("write %d is not readable on the follower that answered it", i)
		}
	}
	if d := time.Since(start); d >= commit {
		t.Fatalf("ten writes through a follower took %s, more than one commit timeout (%s): the followers waited for it", d, commit)
	}
	// The leader counts a notice once the follower's answer is back, which
	// can be after the follower answered its write.
	noticesIdle(t, leader)
	if got := told(noticeTold) - toldBefore; got != 10 {
		t.Errorf("%v of 10 forwarded writes were told by a commit notice", got)
	}
	if got := told(noticeBarrier) - barriersBefore; got != 0 {
		t.Errorf("a barrier stood in for %v of 10 commit notices", got)
	}
	last := leader.node.raft.LastIndex()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := leader.node.logs.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == raft.LogBarrier {
			t.Errorf("entry %d of the leader's log is a barrier: the follower was told its commit by one", i)
		}
	}
}

// noticesIdle waits until leader has no commit notice pending or on the
// way, so that the counters of notices are final.
func noticesIdle(t *testing.T, leader *Server) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c := leader.notices
		c.mu.Lock()
		idle := len(c.pending) == 0 && len(c.inFlight) == 0
		c.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader's commit notices did not settle")
		}
		time.Sleep(time.Millisecond) // in-process state without an event
	}
}

// TestCommitNoticeFallsBackToTheBarrier: a forwarded write whose previous
// entry the leader cannot name (an older server sends none; a bogus one is
// not in the leader's log; one in it lies more than maxNoticeEntries before
// the write) is still answered well within the commit timeout: the barrier
// of nudgeCommits stands in, and nothing else changes.
func TestCommitNoticeFallsBackToTheBarrier(t *testing.T) {
	const commit = time.Second
	tc := newTestClusterWith(t, 3, func(o *Options) { o.Raft.Commit = commit })
	leader := tc.leader()
	follower := tc.follower(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	barriers := func() float64 { return counterValue(t, leader.metrics.notices.WithLabelValues(noticeBarrier)) }
	// Enough entries that one lies more than maxNoticeEntries back.
	for i := 0; leader.node.raft.LastIndex() <= maxNoticeEntries+1; i++ {
		if _, err := revoke(ctx, leader, fmt.Sprint("filler-", i)); err != nil {
			t.Fatal(err)
		}
	}
	far := leader.node.raft.LastIndex() - maxNoticeEntries // the write lands after LastIndex
	for i, prev := range []uint64{0, 1 << 40, far} {
		data, err := fsm.Encode(fsm.MsgRevoke, follower.opts.Clock(), fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken, ID: fmt.Sprint("fallback-", i)}})
		if err != nil {
			t.Fatal(err)
		}
		noticesIdle(t, leader)
		before := barriers()
		start := time.Now()
		var resp applyResponse
		if _, err := follower.leaderCall(ctx, leader.APIAddr(), "/v1/internal/apply", applyRequest{Command: data, LastIndex: prev}, &resp); err != nil || resp.err() != nil {
			t.Fatalf("last index %d: %v %v", prev, err, resp.err())
		}
		if err := follower.waitApplied(ctx, resp.Index); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= commit {
			t.Fatalf("last index %d: the follower applied its write after %s, not before the commit timeout (%s)", prev, d, commit)
		}
		if got := barriers() - before; got != 1 {
			t.Fatalf("last index %d: %v barriers stood in, want 1", prev, got)
		}
	}
}

// TestCSRCheckedOncePerRequest: a registration's CSR signature is checked
// once, by the server that received the request, whether it leads or
// forwards (no replica checks it again when it applies the command).
func TestCSRCheckedOncePerRequest(t *testing.T) {
	tc := newTestCluster(t, 3)
	leader := tc.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	secret, tok, err := leader.newJoinToken(api.CreateJoinTokenRequest{Kind: "node", Uses: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Propose(ctx, fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: tok}); err != nil {
		t.Fatal(err)
	}
	checks := func() (n float64) {
		for _, s := range tc.servers {
			n += counterValue(t, s.metrics.csrChecks)
		}
		return n
	}
	before := checks()
	for i, s := range tc.servers {
		id := fmt.Sprint("once-", i)
		if _, _, err := s.register(ctx, api.RegisterRequest{CSR: testCSRFor(t, "test.keymesh.example", id), NodeID: id, Token: secret}, ""); err != nil {
			t.Fatalf("registration through %s: %v", s.Name(), err)
		}
		if got := checks() - before; got != float64(i+1) {
			t.Fatalf("after %d registrations (the last through %s, leader %v) %v CSR checks in the cluster", i+1, s.Name(), s == leader, got)
		}
	}
	// Every replica applied the three registrations without checking again.
	for _, s := range tc.servers {
		if err := s.waitApplied(ctx, leader.Store().Index()); err != nil {
			t.Fatal(err)
		}
	}
	if got := checks() - before; got != 3 {
		t.Fatalf("%v CSR checks for 3 registrations once applied everywhere", got)
	}
}

// registerWithToken registers node id of network through srv with a new
// node join token and returns its certificate's serial.
func registerWithToken(ctx context.Context, t *testing.T, srv *Server, network, id string) string {
	t.Helper()
	secret, tok, err := srv.newJoinToken(api.CreateJoinTokenRequest{Kind: "node"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Propose(ctx, fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: tok}); err != nil {
		t.Fatal(err)
	}
	resp, _, err := srv.register(ctx, api.RegisterRequest{CSR: testCSRFor(t, network, id), NodeID: id, Token: secret}, "")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Registration.Serial
}
