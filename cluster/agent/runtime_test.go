package agent_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// rtEnv is a network of in-process root servers on loopback, for the agent
// runtime's tests.
type rtEnv struct {
	t       *testing.T
	ctx     context.Context
	servers []*cluster.Server
	hash    string
	admin   *client.Client
	base    string
}

func newRTEnv(t *testing.T, n int) *rtEnv { t.Helper(); return newRTEnvWith(t, n, nil) }

// newRTEnvWith is newRTEnv with the root servers' options edited.
func newRTEnvWith(t *testing.T, n int, edit func(*cluster.Options)) *rtEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	base := t.TempDir()
	opts := cluster.Options{Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{t}})}
	if edit != nil {
		edit(&opts)
	}
	r1, res, err := cluster.Bootstrap(cluster.BootstrapConfig{Network: network, Name: "r1", DataDir: filepath.Join(base, "r1"),
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &rtEnv{t: t, ctx: ctx, servers: []*cluster.Server{r1}, hash: res.CAHash, base: base}
	t.Cleanup(func() {
		for _, s := range e.servers {
			s.Shutdown()
		}
	})
	e.admin = e.adminOf(r1)
	for i := 2; i <= n; i++ {
		tok, err := e.admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("r%d", i)
		s, err := cluster.Join(ctx, cluster.JoinConfig{Join: r1.APIAddr(), Token: tok.Secret, CAHash: res.CAHash, Name: name,
			DataDir: filepath.Join(base, name), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		e.servers = append(e.servers, s)
	}
	return e
}

// adminOf is an admin client of server s.
func (e *rtEnv) adminOf(s *cluster.Server) *client.Client {
	e.t.Helper()
	dir := e.servers[0].DataDir()
	cl, err := client.New(client.Config{Server: s.APIAddr(), CAFile: cluster.RootsPath(dir), Credential: cluster.CredentialPath(dir)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

// node registers a node with a join token and returns its data directory.
func (e *rtEnv) node(id string) string {
	e.t.Helper()
	tok, err := e.admin.CreateJoinToken(e.ctx, api.CreateJoinTokenRequest{Kind: "node"})
	if err != nil {
		e.t.Fatal(err)
	}
	dir := filepath.Join(e.base, id)
	if _, err := agent.Join(e.ctx, agent.JoinConfig{Server: e.servers[0].APIAddr(), CAHash: e.hash, Network: network,
		NodeID: id, DataDir: dir, Token: tok.Secret}); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// revoke commits a revocation through the admin client and returns its
// Raft index.
func (e *rtEnv) revoke(kind, id string) uint64 {
	e.t.Helper()
	resp, err := e.admin.Revoke(e.ctx, api.RevokeRequest{Kind: kind, ID: id, Reason: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Index
}

// rtAgent is a running agent with a client of its socket.
type rtAgent struct {
	*agent.Agent
	local *agent.LocalClient
	stop  func() error
}

// start runs an agent for dir until the test ends (or stop).
func (e *rtEnv) start(dir string, cfg agent.RunConfig) *rtAgent {
	e.t.Helper()
	cfg.DataDir = dir
	if cfg.TrustWait == 0 {
		cfg.TrustWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{e.t}})
	}
	a, err := agent.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		e.t.Fatalf("agent did not start: %v", err)
	}
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	e.t.Cleanup(func() { stop() })
	local := agent.NewLocalClient(a.SocketPath())
	e.t.Cleanup(local.Close)
	return &rtAgent{Agent: a, local: local, stop: stop}
}

// waitTrust waits until cond holds on the agent's followed state, woken
// by each new state.
func waitTrust(t *testing.T, a *rtAgent, what string, cond func(trust.View) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Follower().WaitFor(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (trust index %d)", what, err, a.Follower().Index())
	}
}

// caughtUp waits until the agent follows index.
func caughtUp(t *testing.T, a *rtAgent, index uint64) {
	t.Helper()
	waitTrust(t, a, fmt.Sprintf("trust index %d", index), func(v trust.View) bool { return v.Index() >= index })
}

// verify asks the agent's local API and, for the same token, its verifier
// in process; both must agree. It returns the API's answer.
func verify(t *testing.T, a *rtAgent, token string) agent.VerifyResponse {
	t.Helper()
	got, err := a.local.Verify(context.Background(), agent.VerifyRequest{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	_, verr := a.Verifier().Verify(context.Background(), identity.VerifyRequest{Token: token})
	var ve *identity.VerifyError
	switch {
	case got.Valid && verr != nil:
		t.Fatalf("API says valid, verifier: %v", verr)
	case !got.Valid && (!errors.As(verr, &ve) || ve.Reason != got.Reason):
		t.Fatalf("API says %s, verifier: %v", got.Reason, verr)
	}
	return got
}

// mint mints through the agent's socket for audience aud.
func mint(t *testing.T, a *rtAgent, aud string, ttl string) agent.MintResponse {
	t.Helper()
	m, err := a.local.Mint(context.Background(), agent.MintRequest{Audience: agent.Audience{aud}, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAgentRefusesRevoked: a token of another node verifies at the agent;
// once a revocation of its jti, key, certificate or node is committed and
// the agent has the next trust document, the agent refuses it with the
// matching reason, cached or not; a root server refuses it at once after
// the commit.
func TestAgentRefusesRevoked(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	va := e.start(e.node("verifier"), agent.RunConfig{})
	aud := va.ID().String()
	for _, kind := range []string{"token", "key", "cert", "node"} {
		t.Run(kind, func(t *testing.T) {
			dir := e.node("victim-" + kind)
			victim := e.start(dir, agent.RunConfig{})
			m := mint(t, victim, aud, "10m")
			// The victim's key may be newer than the verifier's document:
			// an unknown kid makes the verifier refresh once.
			if got := verify(t, va, m.Token); !got.Valid || got.Node != "victim-"+kind || got.KID != m.KID || got.Principal != "NODE" {
				t.Fatalf("before revocation: %+v", got)
			}
			verify(t, va, m.Token) // now from the cache
			certs, err := ca.ReadCertsFile(agent.CertPath(dir))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := identity.ParseUnverified(m.Token, 0)
			if err != nil {
				t.Fatal(err)
			}
			id := map[string]string{"token": tok.Claims.ID, "key": m.KID, "cert": identity.SerialHex(certs[0]), "node": "victim-" + kind}[kind]
			idx := e.revoke(kind, id)
			caughtUp(t, va, idx)
			if got := verify(t, va, m.Token); got.Valid || got.Reason != "revoked_"+kind || got.Index < idx {
				t.Fatalf("after revocation: %+v", got)
			}
			// A root server verifying against its live replica refuses too.
			if out, err := e.admin.Verify(e.ctx, m.Token, aud); err != nil || out.Valid || out.Reason != "revoked_"+kind {
				t.Fatalf("root server after revocation: %+v, %v", out, err)
			}
		})
	}
}

// recSource wraps a real root server client and records the index of
// every blocking query; with hold set it holds blocking queries (wait > 0)
// until ctx ends, so that only Refresh reaches the server.
type recSource struct {
	cl   *client.Client
	hold bool
	rec  *recorder
}

type recorder struct {
	mu      sync.Mutex
	indexes []uint64 // index argument of each blocking query
	answers []uint64 // index of each answer
	quick   int      // calls with wait 0 (Refresh)
	asked   chan struct{}
	once    sync.Once
}

func (s *recSource) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	s.rec.mu.Lock()
	if wait == 0 {
		s.rec.quick++
	} else {
		s.rec.indexes = append(s.rec.indexes, index)
		if s.rec.asked != nil {
			s.rec.once.Do(func() { close(s.rec.asked) })
		}
	}
	s.rec.mu.Unlock()
	if s.hold && wait > 0 && index > 0 {
		<-ctx.Done()
		return trust.Delta{}, ctx.Err()
	}
	doc, err := s.cl.Trust(ctx, index, wait, full)
	if err == nil && wait > 0 {
		s.rec.mu.Lock()
		s.rec.answers = append(s.rec.answers, doc.Index)
		s.rec.mu.Unlock()
	}
	return doc, err
}

func (s *recSource) Close() { s.cl.Close() }

func recDial(t *testing.T, dir string, rec *recorder, hold bool) func(string) (agent.TrustSource, error) {
	return func(server string) (agent.TrustSource, error) {
		cert, err := agent.Certificate(dir)
		if err != nil {
			return nil, err
		}
		cl, err := client.New(client.Config{Server: server, CAFile: agent.RootsPath(dir), Certificate: &cert})
		if err != nil {
			return nil, err
		}
		return &recSource{cl: cl, hold: hold, rec: rec}, nil
	}
}

// TestFollowerResumesFromIndex: each blocking query asks from the index of
// the last answer; a restarted agent asks from the index it persisted.
func TestFollowerResumesFromIndex(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	dir := e.node("resumer")
	rec := &recorder{}
	a := e.start(dir, agent.RunConfig{Dial: recDial(t, dir, rec, false)})
	caughtUp(t, a, 1)
	for range 3 {
		caughtUp(t, a, e.revoke("token", fmt.Sprintf("resume-%d", a.Follower().Index())))
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	last := a.Follower().Index()
	rec.mu.Lock()
	if rec.indexes[0] != 0 {
		t.Fatalf("first query from index %d, want 0", rec.indexes[0])
	}
	held := uint64(0)
	for i, idx := range rec.indexes {
		if idx != held {
			t.Fatalf("query %d from index %d, but the agent held %d (queries %v, answers %v)", i, idx, held, rec.indexes, rec.answers)
		}
		if i < len(rec.answers) {
			held = max(held, rec.answers[i])
		}
	}
	rec.mu.Unlock()
	doc, err := agent.ReadTrustFile(dir, network)
	if err != nil || doc.Index != last {
		t.Fatalf("persisted index %d (%v), agent held %d", doc.Index, err, last)
	}

	rec2 := &recorder{asked: make(chan struct{})}
	b := e.start(dir, agent.RunConfig{Dial: recDial(t, dir, rec2, false)})
	if b.Follower().Index() != last {
		t.Fatalf("restarted agent starts at %d, want %d", b.Follower().Index(), last)
	}
	select {
	case <-rec2.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the restarted agent asked nothing")
	}
	rec2.mu.Lock()
	defer rec2.mu.Unlock()
	if rec2.indexes[0] != last {
		t.Fatalf("restarted agent asks from %d, want %d", rec2.indexes[0], last)
	}
}

// TestUnknownKeyRefreshes: with its blocking queries held, the agent
// learns a new node's key only by the verifier's refresh on an unknown kid.
func TestUnknownKeyRefreshes(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	dir := e.node("refresher")
	rec := &recorder{}
	va := e.start(dir, agent.RunConfig{Dial: recDial(t, dir, rec, true)})
	caughtUp(t, va, 1)
	before := va.Follower().Index()
	victim := e.start(e.node("newcomer"), agent.RunConfig{})
	m := mint(t, victim, va.ID().String(), "")
	if got := verify(t, va, m.Token); !got.Valid {
		t.Fatalf("new node's token: %+v", got)
	}
	rec.mu.Lock()
	quick := rec.quick
	rec.mu.Unlock()
	if quick != 1 || va.Follower().Index() <= before {
		t.Fatalf("refreshes %d, index %d -> %d", quick, before, va.Follower().Index())
	}
	// An unknown kid within the cooldown does not ask again.
	victim2 := e.start(e.node("latecomer"), agent.RunConfig{})
	m2 := mint(t, victim2, va.ID().String(), "")
	if got := verify(t, va, m2.Token); got.Valid || got.Reason != "unknown_key" {
		t.Fatalf("unknown kid within the cooldown: %+v", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.quick != 1 {
		t.Fatalf("refreshed %d times within the cooldown", rec.quick)
	}
}

// TestFollowerFailsOver: with the root server it follows gone, the agent
// follows another one, learnt from the trust document.
func TestFollowerFailsOver(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 3)
	a := e.start(e.node("wanderer"), agent.RunConfig{TrustWait: time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	waitTrust(t, a, "three servers in the trust document", func(trust.View) bool { return len(a.Follower().Status().Servers) == 3 })
	// Stop the server followed now (r1 from node.json, unless a query
	// failed already) and write through another.
	gone, other := -1, -1
	followed := a.Follower().Status().Server
	for i, s := range e.servers {
		if s.APIAddr() == followed {
			gone = i
		} else {
			other = i
		}
	}
	if gone < 0 {
		t.Fatalf("following %q, not a root server of %v", followed, a.Follower().Status().Servers)
	}
	e.servers[gone].Shutdown()
	admin := e.adminOf(e.servers[other])
	// The two servers left elect a leader (woken by Raft's observations);
	// a write through the other one then commits.
	lctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	if _, err := e.servers[other].WaitLeader(lctx); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.Revoke(e.ctx, api.RevokeRequest{Kind: "token", ID: "failover", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	caughtUp(t, a, resp.Index)
	if st := a.Follower().Status(); st.Server == followed || st.Server == "" {
		t.Fatalf("still following %q", st.Server)
	}
}

// TestAgentVerifiesOfflineAfterRestart: the trust state persisted by one
// agent lets the next verify at once with no root server reachable, with
// the revocations it had.
func TestAgentVerifiesOfflineAfterRestart(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	dir := e.node("offline")
	va := e.start(dir, agent.RunConfig{})
	victim := e.start(e.node("peer"), agent.RunConfig{})
	good := mint(t, victim, va.ID().String(), "1h")
	bad := mint(t, victim, va.ID().String(), "1h")
	if got := verify(t, va, good.Token); !got.Valid {
		t.Fatalf("before: %+v", got)
	}
	tok, _ := identity.ParseUnverified(bad.Token, 0)
	caughtUp(t, va, e.revoke("token", tok.Claims.ID))
	if err := va.stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.servers {
		s.Shutdown()
	}
	b := e.start(dir, agent.RunConfig{MinBackoff: time.Second})
	if got := verify(t, b, good.Token); !got.Valid {
		t.Fatalf("offline after restart: %+v", got)
	}
	if got := verify(t, b, bad.Token); got.Valid || got.Reason != "revoked_token" {
		t.Fatalf("revoked token offline after restart: %+v", got)
	}
	if st := b.Follower().Status(); !st.LastContact.IsZero() {
		t.Fatalf("a root server answered: %+v", st)
	}
	// Minting needs no root server either.
	if m := mint(t, b, "someone", ""); m.Token == "" {
		t.Fatal("no token")
	}
}

// offsetClock is the real clock moved by an offset the test sets.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) at(t time.Time) { c.off.Store(int64(time.Until(t))) }
func (c *offsetClock) reset()         { c.off.Store(0) }

// rotateKey gives the node in dir a new key and certificate, as `keymesh
// node rotate-key` does: a renewal with a CSR for a new key. It returns
// the index of the commit.
func rotateKey(t *testing.T, e *rtEnv, dir, id string) uint64 {
	t.Helper()
	cur, err := agent.Certificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.GenerateKey(ca.KeyP384, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key, ca.Identity{Network: network, Kind: ca.KindNode, Name: id}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Server: e.servers[0].APIAddr(), CAFile: agent.RootsPath(dir), Certificate: &cur})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.Renew(e.ctx, csr)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if err := ca.WriteKeyFile(agent.KeyPath(dir), key); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteCertsFile(agent.CertPath(dir), chain...); err != nil {
		t.Fatal(err)
	}
	return resp.Index
}

// TestKeyRotation: after a node rotates its key, its agent mints under the
// new kid; a token the old key signed before the rotation verifies until it
// expires; a token the old key signs after it became retiring (beyond the
// skew) is refused; the JWKS publishes both keys.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	clock := &offsetClock{}
	va := e.start(e.node("checker"), agent.RunConfig{Clock: clock.now})
	dir := e.node("rotor")
	victim := e.start(dir, agent.RunConfig{})
	aud := va.ID().String()
	// A renewal (same key, new certificate): the agent mints under it.
	st1, err := victim.local.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := agent.Renew(e.ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := victim.local.Status(e.ctx)
	if err != nil || st2.CertSerial == st1.CertSerial || st2.CertSerial != identity.SerialHex(renewed) || st2.KID != st1.KID {
		t.Fatalf("status after renewal %+v (before %+v), %v", st2, st1, err)
	}
	oldCreds, err := agent.Certificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	oldChain := []*x509.Certificate{oldCreds.Leaf}
	for _, der := range oldCreds.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		oldChain = append(oldChain, c)
	}
	before := mint(t, victim, aud, "10m")
	if got := verify(t, va, before.Token); !got.Valid {
		t.Fatalf("before rotation: %+v", got)
	}

	caughtUp(t, va, rotateKey(t, e, dir, "rotor"))
	old, ok := va.Follower().State().JWK(before.KID)
	if !ok || old.State != "retiring" || old.RetiringSince.IsZero() {
		t.Fatalf("old key after rotation: %+v", old)
	}
	line := old.RetiringSince
	if got := verify(t, va, before.Token); !got.Valid {
		t.Fatalf("old key's token from before the rotation: %+v", got)
	}
	after := mint(t, victim, aud, "10m")
	if after.KID == before.KID {
		t.Fatal("the agent still mints under the old key after the rotation")
	}
	if got := verify(t, va, after.Token); !got.Valid || got.KID != after.KID {
		t.Fatalf("new key's token: %+v", got)
	}

	// The old key signing on either side of the line (skew 30 s).
	oldMint := func(at time.Time) string {
		m, err := identity.NewMinter(identity.MinterConfig{Key: oldCreds.PrivateKey.(crypto.Signer), Cert: oldChain[0],
			Chain: oldChain[1:], Clock: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := m.Mint(identity.MintRequest{Audience: []string{aud}, TTL: 5 * time.Minute, Principal: identity.PrincipalNode})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	justBefore, beyond := oldMint(line.Add(-time.Second)), oldMint(line.Add(32*time.Second))
	clock.at(line.Add(33 * time.Second))
	if got := verify(t, va, justBefore); !got.Valid {
		t.Fatalf("old key, signed before the line: %+v", got)
	}
	if got := verify(t, va, beyond); got.Valid || got.Reason != "key_state" {
		t.Fatalf("old key, signed after the line: %+v", got)
	}
	if got := verify(t, va, before.Token); !got.Valid {
		t.Fatalf("old key's token from before, 33 s after the line: %+v", got)
	}
	// Until it expires.
	tok, _ := identity.ParseUnverified(before.Token, 0)
	clock.at(tok.Claims.Expiry.Add(31 * time.Second))
	if got := verify(t, va, before.Token); got.Valid || got.Reason != "expired" {
		t.Fatalf("old key's token after its expiry: %+v", got)
	}
	clock.reset()

	// The JWKS publishes both keys.
	set, _, err := va.local.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.Find(before.KID); !ok {
		t.Fatal("retiring key not in the JWKS")
	}
	if _, ok := set.Find(after.KID); !ok {
		t.Fatal("active key not in the JWKS")
	}
}

// TestSocket: the socket is the node's alone (0600); a second agent of the
// same node is refused while the first runs; a socket left behind by a
// dead agent is replaced.
func TestSocket(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	dir := e.node("sock")
	a := e.start(dir, agent.RunConfig{})
	info, err := os.Stat(a.SocketPath())
	if err != nil || info.Mode().Perm() != 0o600 || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, %v", info.Mode(), err)
	}
	if err := agent.Run(e.ctx, agent.RunConfig{DataDir: dir}); !errors.Is(err, agent.ErrAgentRunning) {
		t.Fatalf("second agent: %v", err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.local.Status(context.Background()); !errors.Is(err, agent.ErrNoAgent) {
		t.Fatalf("status of a stopped agent: %v", err)
	}
	// A stale socket file (a killed agent) does not stop the next one.
	if err := os.WriteFile(a.SocketPath(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b := e.start(dir, agent.RunConfig{})
	if st, err := b.local.Status(context.Background()); err != nil || st.Node != "sock" || st.KID == "" {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// TestRevokedAgentStops: once its trust state revokes the node (or the
// node's key, or its certificate), the agent answers every call of its
// local API with node_revoked, saying why, and after RevokedLinger it
// stops with ErrRevoked.
func TestRevokedAgentStops(t *testing.T) {
	t.Parallel()
	e := newRTEnv(t, 1)
	for _, kind := range []string{"node", "key", "cert"} {
		t.Run(kind, func(t *testing.T) {
			dir := e.node("doomed-" + kind)
			const linger = 7 * time.Hour // stands for the linger in After below
			lingered := make(chan time.Time)
			after := func(d time.Duration) <-chan time.Time {
				if d == linger {
					return lingered
				}
				return time.After(d)
			}
			cfg := agent.RunConfig{DataDir: dir, TrustWait: 2 * time.Second, RevokedLinger: linger, After: after,
				Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: testWriter{t}})}
			a, err := agent.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			<-a.Ready()
			local := agent.NewLocalClient(a.SocketPath())
			defer local.Close()
			if _, err := local.Status(ctx); err != nil {
				t.Fatalf("before the revocation: %v", err)
			}
			certs, err := ca.ReadCertsFile(agent.CertPath(dir))
			if err != nil {
				t.Fatal(err)
			}
			kid, _ := identity.Thumbprint(certs[0].PublicKey)
			e.revoke(kind, map[string]string{"node": "doomed-" + kind, "key": kid, "cert": identity.SerialHex(certs[0])}[kind])
			select {
			case <-a.RevokedC():
			case err := <-done:
				t.Fatalf("agent stopped before it said why: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("the agent did not see its revocation")
			}
			for _, call := range []func() error{
				func() error { _, err := local.Status(ctx); return err },
				func() error { _, err := local.Mint(ctx, agent.MintRequest{Audience: agent.Audience{"x"}}); return err },
				func() error { _, err := local.Verify(ctx, agent.VerifyRequest{Token: "x"}); return err },
			} {
				var le *agent.LocalAPIError
				if err := call(); !errors.As(err, &le) || le.Code != agent.CodeRevoked || le.Status != 403 {
					t.Fatalf("a call to the revoked agent: %v", err)
				}
			}
			lingered <- time.Now()
			select {
			case err := <-done:
				if !errors.Is(err, agent.ErrRevoked) {
					t.Fatalf("Run = %v, want ErrRevoked", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the revoked agent did not stop")
			}
		})
	}
}
