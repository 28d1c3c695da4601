package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/cluster/run"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/routing/rtr"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/session/gossip"
)

// fileSocket is the local API's unix socket in the data directory.
const fileSocket = "agent.sock"

// SocketPath is where the agent of the node in dir serves its local API.
func SocketPath(dir string) string { return filepath.Join(dir, fileSocket) }

// maxSocketPath is the longest unix socket path the kernel takes (sun_path
// less its terminating NUL).
const maxSocketPath = 107

// Errors of the agent runtime.
var (
	// ErrAgentRunning: another agent serves the node's socket.
	ErrAgentRunning = errors.New("agent: another agent of this node is running (its socket answers)")
	// ErrNotLoopback: ListenTCP names an address off the host.
	ErrNotLoopback = errors.New("agent: the local API listens on loopback addresses only")
	// ErrNotApproved: the node has no certificate yet.
	ErrNotApproved = errors.New("agent: the node has no certificate yet; finish `keymesh node join` first")
)

// RunConfig configures an Agent. Zero fields take the defaults.
type RunConfig struct {
	// DataDir is the node's data directory (required): node.json, node.key,
	// node.pem and ca.pem from `keymesh node join`; the agent adds
	// trust.json and agent.sock.
	DataDir string
	// Logger receives structured logs; nil discards them.
	Logger hclog.Logger
	// Clock returns the current time; nil means time.Now. Minting,
	// verification and the follower's bookkeeping use it.
	Clock func() time.Time
	// After returns a channel that receives once d has passed; nil means
	// time.After (the follower's backoff).
	After func(d time.Duration) <-chan time.Time
	// ListenTCP, if set, is a loopback host:port where the local API is
	// served too, without minting: verify, JWKS, discovery, status.
	ListenTCP string
	// Servers are root server API addresses besides the one in node.json.
	Servers []string
	// PinServers makes the agent talk to Servers alone (not node.json's
	// server, nor the addresses the trust state lists): a site that
	// reaches the roots through a relay or load balancer.
	PinServers bool
	// TrustWait is how long one blocking trust query waits. Default 30s.
	TrustWait time.Duration
	// MinBackoff and MaxBackoff bound the follower's pause when no root
	// server answers. Defaults 250ms and 30s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Dial makes the TrustSource of a root server; nil means HTTPS with the
	// node certificate, trusting ca.pem. Tests inject faults here.
	Dial func(server string) (TrustSource, error)
	// VerifierCacheSize is the verifier's cache of verified tokens (see
	// identity.VerifierConfig.CacheSize); 0 means its default.
	VerifierCacheSize int
	// RevokedLinger is how long a revoked agent keeps answering its local
	// clients why before it stops (every call answers node_revoked
	// meanwhile). Default 10s.
	RevokedLinger time.Duration

	// Listen, if set, is where the agent takes peering sessions
	// (host:port, any address).
	Listen string
	// Peers are the peers the agent dials, and those whose sessions it
	// takes with a role or key of their own.
	Peers []session.PeerConfig
	// HoldTime is the hold time the agent proposes (0: 30 s); NoHoldTime
	// proposes none.
	HoldTime   time.Duration
	NoHoldTime bool
	// SessionLimits tune the sessions (see session.Limits).
	SessionLimits session.Limits
	// SessionHandler is told of sessions and UPDATEs (the routing layer).
	SessionHandler session.Handler
	// ReplayWindow: routes signed longer ago are stale (0: 24 h).
	ReplayWindow time.Duration
	// SessionListener and SessionDial replace TCP for the sessions (tests).
	SessionListener net.Listener
	SessionDial     func(ctx context.Context, addr string) (net.Conn, error)

	// GossipAddr, if set, is where the agent gossips (host:port, UDP and
	// TCP): the node graph and revocation bulletins (session/gossip).
	// GossipAdvertise is the address others reach it at, if another.
	GossipAddr, GossipAdvertise string
	// GossipJoin are members to join at start (host:port).
	GossipJoin []string
	// Memberships are the other networks this node is a member of, sorted
	// (each run by an Agent of its own, over its own data directory):
	// sessions tell peers of them, and a network that requires exclusive
	// membership makes New fail with ErrExclusive.
	Memberships []string
	// AcceptNetworks, if set, narrows the network's access list for this
	// node: it accepts its own network and those of the list that the
	// network's list holds too, at every layer (sessions, gossip,
	// routes, tokens). It never widens the network's list.
	AcceptNetworks []string

	// RTRListen, if set, is where the agent serves its network's route
	// authorizations to a router beside it over RTR (RFC 8210, and 6810
	// for version 0 routers), from the trust state it follows: plain TCP,
	// for loopback or a trusted network. Port 0 picks one.
	RTRListen string
	// RTRMaxRouters bounds the routers served at once (0: the default of
	// package rtr).
	RTRMaxRouters int

	// GossipTransport replaces the network of gossip, GossipTune edits
	// memberlist's configuration (tests).
	GossipTransport memberlist.Transport
	GossipTune      func(*memberlist.Config)
}

func (c *RunConfig) validate() error {
	if c.DataDir == "" {
		return errors.New("agent: the agent needs the node's data directory (--data-dir)")
	}
	if len(SocketPath(c.DataDir)) > maxSocketPath {
		return fmt.Errorf("agent: socket path %s is longer than %d bytes; use a shorter --data-dir", SocketPath(c.DataDir), maxSocketPath)
	}
	if c.ListenTCP != "" {
		if err := checkLoopback(c.ListenTCP); err != nil {
			return err
		}
	}
	for _, n := range c.AcceptNetworks {
		if err := ca.ValidateNetwork(n); err != nil {
			return fmt.Errorf("agent: --accept-network: %w", err)
		}
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("agent: --listen %q is not host:port: %w", c.Listen, err)
		}
	}
	for _, addr := range append([]string{c.GossipAddr, c.GossipAdvertise}, c.GossipJoin...) {
		if addr == "" {
			continue
		}
		if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
			return fmt.Errorf("agent: gossip address %q is not HOST:PORT", addr)
		}
	}
	if c.PinServers && len(c.Servers) == 0 {
		return errors.New("agent: --pin-servers needs the servers to pin (--server)")
	}
	if len(c.GossipJoin) > 0 && c.GossipAddr == "" && c.GossipTransport == nil {
		return errors.New("agent: --gossip-join needs --gossip-addr (where this node gossips)")
	}
	return nil
}

// checkLoopback accepts host:port with a loopback IP or localhost.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("agent: --api-listen %q is not host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
}

// Agent is a node's runtime: it follows the trust state of the roots,
// verifies tokens locally against it, mints under the node's own key, and
// serves that on the local API. Make it with New, then Run it.
type Agent struct {
	cfg      RunConfig
	log      hclog.Logger
	state    State
	id       identity.SPIFFEID
	roots    []*x509.Certificate
	creds    *credentials
	follower *Follower
	keys     *trustKeys
	verifier *identity.Verifier

	anchors string // anchorsKey of the anchors in the verifier; guarded by the follower's apply order
	// exclusiveSaid: the log said once that the network requires
	// exclusive membership of this node of several networks.
	exclusiveSaid atomic.Bool
	// narrowed is the followed state narrowed to AcceptNetworks (view).
	narrowed atomic.Pointer[narrowedView]

	ready   chan struct{}
	tcpAddr atomic.Pointer[net.TCPAddr]
	rtr     atomic.Pointer[rtr.Server]
	rtrAddr atomic.Pointer[net.TCPAddr]

	// Peering sessions: the speaker Run makes, its listener's address,
	// and the authorizer of peer.connect over the replicated policies.
	speaker       atomic.Pointer[session.Speaker]
	router        atomic.Pointer[routing.Router]
	sessionAddr   atomic.Value // string
	authz         *policy.Authorizer
	policyVersion atomic.Uint64
	policySet     atomic.Bool

	// revoked is set once the trust state revokes this node, its
	// certificate (or an issuer above it) or its key; revokedCh is closed
	// then.
	revoked     atomic.Pointer[error]
	revokedCh   chan struct{}
	revokedOnce sync.Once

	// Gossip: the keyring the roots hand out and the member Run starts.
	gossipKeys *keyring
	gossip     atomic.Pointer[gossip.Gossip]
	gossipUp   chan struct{}
}

// trustKeys is the verifier's key source: trust.Keys over the followed
// state, whose Refresh asks the roots at once (an unknown kid).
type trustKeys struct {
	*trust.Keys
	follower *Follower
}

var _ identity.Refresher = (*trustKeys)(nil)

func (k *trustKeys) Refresh(ctx context.Context) error { return k.follower.Refresh(ctx) }

// New reads the node's data directory (it must hold an approved node) and
// trust.json if there is one, so that the agent verifies at once, before
// any root server answers. It opens nothing; Run does.
func New(cfg RunConfig) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.RevokedLinger == 0 {
		cfg.RevokedLinger = 10 * time.Second
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	st, err := readState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if st.Status != fsm.RegistrationApproved {
		return nil, fmt.Errorf("%w (registration %s is %s)", ErrNotApproved, st.RegistrationID, st.Status)
	}
	roots, err := ca.ReadCertsFile(RootsPath(cfg.DataDir))
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("node", st.NodeID), state: st, roots: roots,
		id:    identity.SPIFFEID{Network: st.Network, Kind: identity.KindNode, Name: st.NodeID},
		creds: newCredentials(cfg.DataDir, cfg.Clock), ready: make(chan struct{}), revokedCh: make(chan struct{}), gossipUp: make(chan struct{})}
	if _, err := a.creds.current(); err != nil {
		return nil, err
	}
	dial := cfg.Dial
	if dial == nil {
		caPEM := ca.EncodeCertsPEM(roots...)
		dial = func(server string) (TrustSource, error) {
			return &nodeSource{server: server, caPEM: caPEM, creds: a.creds}, nil
		}
	}
	a.follower, err = NewFollower(FollowerConfig{DataDir: cfg.DataDir, Network: st.Network,
		Servers: a.rootServers(), Pinned: cfg.PinServers, Dial: dial, Wait: cfg.TrustWait,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Clock: cfg.Clock, After: cfg.After,
		Logger: a.log.Named("trust"), OnChange: a.trustChanged, OnRevoked: a.markRevoked, OnBulletins: a.publishBulletins})
	if err != nil {
		return nil, err
	}
	if a.gossipKeys, err = newKeyring(cfg.DataDir, st.Network); err != nil {
		a.log.Error("ignoring the persisted gossip keyring; fetching it anew", "path", GossipKeysPath(cfg.DataDir), "error", err)
	}
	if len(cfg.Memberships) > 0 && trust.Exclusive(a.follower.State(), st.Network) {
		return nil, fmt.Errorf("%w: %s does, and node %s is a member of %v too (%s); move those memberships to a node and data directory of their own",
			ErrExclusive, st.Network, st.NodeID, cfg.Memberships, filepath.Join(cfg.DataDir, dirNetworks))
	}
	a.keys = &trustKeys{Keys: &trust.Keys{View: a.view}, follower: a.follower}
	anchors, raw := a.anchorsOf(a.follower.Current())
	a.warnAccept(a.follower.State())
	a.verifier, err = identity.NewVerifier(identity.VerifierConfig{Keys: a.keys, Revocations: a.keys.Keys,
		Anchors: anchors, Audience: []string{a.id.String()}, Clock: cfg.Clock, CacheSize: cfg.VerifierCacheSize})
	if err != nil {
		return nil, err
	}
	a.anchors = raw
	a.authz = policy.NewAuthorizer(nil)
	if x := a.follower.Current(); x != nil {
		a.syncPolicy(x)
	}
	if a.sessionsWanted() {
		// Checked now; Run binds the listener and makes it again.
		if _, err := session.New(a.sessionConfig(nil)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// rootServers are the root servers the agent starts from: node.json's and
// the configured ones, or with PinServers the configured ones alone.
func (a *Agent) rootServers() []string {
	if a.cfg.PinServers {
		return slices.Clone(a.cfg.Servers)
	}
	return append([]string{a.state.Server}, a.cfg.Servers...)
}

// anchorsOf returns the trust anchors of a document as this node applies
// them (narrowed to AcceptNetworks; the roots of ca.pem for the node's
// network when the document has none) and their anchorsKey.
func (a *Agent) anchorsOf(x *trust.State) (identity.TrustAnchors, string) {
	fallback := identity.TrustAnchors{Roots: map[string][]*x509.Certificate{a.state.Network: a.roots}, Accepted: []string{a.state.Network}}
	if x == nil {
		return fallback, ""
	}
	v := trust.Narrow(x, a.cfg.AcceptNetworks)
	raw := anchorsKey(v)
	an, err := trust.Anchors(v, a.state.Network)
	if err != nil {
		a.log.Error("trust anchors of the trust state unusable; using ca.pem", "error", err)
		return fallback, raw
	}
	if len(an.Roots[a.state.Network]) == 0 {
		an.Roots[a.state.Network] = a.roots
	}
	return an, raw
}

// trustChanged is the follower's OnChange: the verifier forgets what it
// cached, and takes new anchors when they changed; a trust state that
// revokes this node stops the agent.
func (a *Agent) trustChanged(_, cur *trust.State) {
	defer a.checkRevoked(cur)
	defer func() {
		if s := a.speaker.Load(); s != nil {
			s.TrustChanged()
		}
		if r := a.router.Load(); r != nil {
			r.TrustChanged()
		}
	}()
	a.syncPolicy(cur)
	if len(a.cfg.Memberships) > 0 && trust.Exclusive(cur, a.state.Network) && !a.exclusiveSaid.Swap(true) {
		a.log.Error("this network now requires exclusive membership: its nodes refuse this node, a member of other networks too; move those memberships to a node of their own",
			"others", a.cfg.Memberships)
	}
	if anchorsKey(trust.Narrow(cur, a.cfg.AcceptNetworks)) != a.anchors {
		a.warnAccept(cur)
		an, raw := a.anchorsOf(cur)
		if err := a.verifier.SetAnchors(an); err != nil {
			a.log.Error("trust anchors of the trust state refused; keeping the previous ones", "error", err)
		} else {
			a.anchors = raw
			return
		}
	}
	a.verifier.Invalidate()
}

// anchorsKey names the anchors of v and their access lists: equal keys,
// equal anchors (each record's modify index moves with any change; the
// access list is compared itself, for a narrowed view).
func anchorsKey(v trust.View) string {
	var b strings.Builder
	for _, an := range v.TrustAnchors() {
		fmt.Fprintf(&b, "%s@%d[%s];", an.Network, an.ModifyIndex, strings.Join(an.Accept, ","))
	}
	return b.String()
}

// narrowedView is the followed state base narrowed to AcceptNetworks.
type narrowedView struct {
	base trust.View
	view trust.View
}

// view is the followed trust state as this node applies it: its
// network's access list narrowed to AcceptNetworks when they are set. It
// is the same value for the same state, so that what caches per view
// (the gossip member's access list) keeps doing so.
func (a *Agent) view() trust.View {
	base := a.follower.State()
	if len(a.cfg.AcceptNetworks) == 0 {
		return base
	}
	if c := a.narrowed.Load(); c != nil && c.base == base {
		return c.view
	}
	c := &narrowedView{base: base, view: trust.Narrow(base, a.cfg.AcceptNetworks)}
	a.narrowed.Store(c)
	return c.view
}

// warnAccept logs the networks of AcceptNetworks that st's access list
// does not hold: a node narrows its network's list, never widens it.
func (a *Agent) warnAccept(st trust.View) {
	if len(a.cfg.AcceptNetworks) == 0 {
		return
	}
	full, err := trust.Anchors(st, a.state.Network)
	if err != nil {
		return
	}
	for _, n := range a.cfg.AcceptNetworks {
		if !slices.Contains(full.Accepted, n) {
			a.log.Warn("--accept-network names a network its network's access list does not hold; its members stay refused (`keymesh trust add` at the roots accepts it)",
				"network", n, "access_list", full.Accepted)
		}
	}
}

// checkRevoked marks the agent revoked when st revokes its node, its
// certificate or an issuer above it, or its key (cluster.CheckChain).
func (a *Agent) checkRevoked(st trust.View) {
	if st == nil {
		return
	}
	nc, err := a.creds.current()
	if err != nil {
		return
	}
	if err := trust.CheckChain(st, nc.chain); err != nil {
		a.markRevoked(err)
	}
}

func (a *Agent) markRevoked(cause error) {
	a.revokedOnce.Do(func() {
		err := fmt.Errorf("%w: %w", ErrRevoked, cause)
		a.revoked.Store(&err)
		a.log.Error("this node is revoked; the agent refuses every call and stops", "error", cause, "stops_in", a.cfg.RevokedLinger.String())
		close(a.revokedCh)
	})
}

// RevokedC is closed once the trust state revokes this node (Revoked says
// why).
func (a *Agent) RevokedC() <-chan struct{} { return a.revokedCh }

// Revoked is why the agent stops, nil while its node is not revoked.
func (a *Agent) Revoked() error {
	if p := a.revoked.Load(); p != nil {
		return *p
	}
	return nil
}

// Verifier verifies tokens against the followed trust state.
func (a *Agent) Verifier() *identity.Verifier { return a.verifier }

// Follower is the agent's trust follower.
func (a *Agent) Follower() *Follower { return a.follower }

// ID is the node's SPIFFE ID (the default audience of Verify).
func (a *Agent) ID() identity.SPIFFEID { return a.id }

// Ready is closed once Run listens (the socket and ListenTCP).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// TCPAddr is where the local API listens on TCP once Ready; nil without
// ListenTCP.
func (a *Agent) TCPAddr() *net.TCPAddr { return a.tcpAddr.Load() }

// SocketPath is the local API's unix socket.
func (a *Agent) SocketPath() string { return SocketPath(a.cfg.DataDir) }

// Mint mints a token under the node's current key and certificate (read
// again after a renewal or rotation). An empty principal means the node's
// principal in the trust state; bind binds the token to the node
// certificate. It returns the token, its kid and its claims.
func (a *Agent) Mint(req identity.MintRequest, bind bool) (string, string, identity.Claims, error) {
	nc, err := a.creds.current()
	if err != nil {
		return "", "", identity.Claims{}, err
	}
	granted := identity.Principal("")
	if n, ok := a.follower.State().Node(a.state.NodeID); ok {
		granted = identity.Principal(n.Principal)
	}
	switch {
	case req.Principal == "" && granted != "":
		req.Principal = granted
	case req.Principal == "":
		req.Principal = identity.PrincipalNode
	case granted != "" && req.Principal != granted:
		// Verifiers would refuse it (principal_not_granted); say so now.
		return "", "", identity.Claims{}, fmt.Errorf("%w: this node holds principal %s, not %s", identity.ErrMint, granted, req.Principal)
	}
	if bind {
		req.BindCert = nc.leaf
	}
	tok, claims, err := nc.minter.Mint(req)
	return tok, nc.minter.KID(), claims, err
}

// Run makes an Agent (New) and runs it until ctx ends.
func Run(ctx context.Context, cfg RunConfig) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// Run runs the agent until ctx ends: it listens on agent.sock (mode 0600)
// and ListenTCP, then runs its parts as one run.Group: the trust follower,
// the local API on each listener, and the watch that stops the agent
// RevokedLinger after the trust state revoked its node. It returns nil
// when ctx ended, or the first failure (a *run.Error naming the part;
// errors.Is finds ErrRevoked, ErrAgentRunning and the like through it).
// Other long-running parts of a node (the Renewer, sessions) run beside
// it in the caller's group. Run is called once.
func (a *Agent) Run(ctx context.Context) error {
	sock, err := listenSocket(a.SocketPath())
	if err != nil {
		return err
	}
	lns := []net.Listener{sock}
	if a.cfg.ListenTCP != "" {
		ln, err := net.Listen("tcp", a.cfg.ListenTCP)
		if err != nil {
			sock.Close()
			return fmt.Errorf("agent: local API on %s: %w", a.cfg.ListenTCP, err)
		}
		a.tcpAddr.Store(ln.Addr().(*net.TCPAddr))
		lns = append(lns, ln)
	}
	jwks := new(atomic.Pointer[jwksDoc])
	errLog := a.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	var g run.Group
	g.Add("trust follower", a.follower)
	for i, ln := range lns {
		api := &localAPI{a: a, mint: i == 0, jwks: jwks}
		srv := &http.Server{Handler: api.handler(), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxHeaderBytes: 16 << 10, ErrorLog: errLog}
		g.Add("local API on "+ln.Addr().String(), run.Func(func(ctx context.Context) error { return serveLocal(ctx, srv, ln) }))
	}
	g.Add("revocation", run.Func(a.stopWhenRevoked))
	if a.cfg.RTRListen != "" {
		srv, ln, err := a.listenRTR()
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return err
		}
		g.Add("rtr on "+ln.Addr().String(), run.Func(func(ctx context.Context) error { return a.serveRTR(ctx, srv, ln) }))
	}
	if a.sessionsWanted() {
		s, err := a.newSpeaker()
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return err
		}
		rt, err := a.newRouter(s)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return err
		}
		a.router.Store(rt)
		a.speaker.Store(s)
		g.Add("sessions", run.Func(a.runSessions(s)))
		g.Add("routing", rt)
	}
	if a.gossipWanted() {
		g.Add("gossip keyring", run.Func(a.followKeyring))
		g.Add("gossip", run.Func(a.runGossip))
	}
	close(a.ready)
	a.log.Info("agent running", "socket", a.SocketPath(), "tcp", a.cfg.ListenTCP, "trust_index", a.follower.Index())
	if x := a.follower.Current(); x != nil {
		a.checkRevoked(x) // the persisted trust state may already say so
	}
	err = g.Run(ctx)
	if err != nil {
		a.log.Error("agent stopped", "error", err)
	} else {
		a.log.Info("agent stopped")
	}
	return err
}

// serveLocal serves the local API on ln until ctx ends, then lets the
// calls in flight finish (5 s at most).
func serveLocal(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("agent: local API on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// stopWhenRevoked fails (with ErrRevoked) RevokedLinger after the trust
// state revoked this node: meanwhile every local call answers why.
func (a *Agent) stopWhenRevoked(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-a.revokedCh:
	}
	select {
	case <-ctx.Done():
		return nil
	case <-a.cfg.After(a.cfg.RevokedLinger):
		return a.Revoked()
	}
}

// listenSocket listens on a unix socket at path with mode 0600. A socket
// left by a dead agent is replaced; one that answers is another agent's.
func listenSocket(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrAgentRunning, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("agent: removing the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: local API socket: %w", err)
	}
	// The data directory is 0700 already; the socket is the node's alone too.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("agent: local API socket: %w", err)
	}
	return ln, nil
}

// nodeSource is the TrustSource of one root server over mutual TLS with
// the node certificate; a new certificate (renewal, rotation) makes a new
// client.
type nodeSource struct {
	server string
	caPEM  []byte
	creds  *credentials

	mu  sync.Mutex
	cur *nodeCreds
	cl  *client.Client
}

// sourceTimeout bounds one call to a root server beyond its blocking wait.
const sourceTimeout = 10 * time.Second

func (s *nodeSource) client() (*client.Client, error) {
	nc, err := s.creds.current()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil && s.cur == nc {
		return s.cl, nil
	}
	cert := nc.tls
	cl, err := client.New(client.Config{Server: s.server, CAPEM: s.caPEM, Certificate: &cert, Timeout: sourceTimeout})
	if err != nil {
		return nil, err
	}
	if s.cl != nil {
		s.cl.Close()
	}
	s.cl, s.cur = cl, nc
	return cl, nil
}

func (s *nodeSource) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	cl, err := s.client()
	if err != nil {
		return trust.Delta{}, err
	}
	return cl.Trust(ctx, index, wait, full)
}

func (s *nodeSource) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		s.cl.Close()
	}
}
