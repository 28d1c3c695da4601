package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

// Limits of a Speaker. Zero fields take the defaults.
type Limits struct {
	// MaxFrame is the largest frame, header included. Default 64 KiB.
	MaxFrame int
	// OpenTimeout bounds the time from a connection's first byte to
	// ESTABLISHED (TLS, then the peer's OPEN and KEEPALIVE). Default 5 s.
	OpenTimeout time.Duration
	// ConnRate and ConnBurst bound the connections accepted per second
	// from one source address. Default 10/s, a burst of 10.
	ConnRate  float64
	ConnBurst int
	// MaxPending bounds the connections not established yet, inbound and
	// outbound. Default 64.
	MaxPending int
	// SendQueue bounds each connection's queue of frames to send; a peer
	// that lets it fill is ended (Cease, out of resources). Default 256.
	SendQueue int
	// ReplayCache bounds the OPEN tokens remembered (each until it
	// expires) to refuse a second showing. Default 100,000.
	ReplayCache int
	// TokenTTL is the lifetime of the tokens in our OPENs. Default 60 s.
	TokenTTL time.Duration
	// MaxSources bounds the source addresses whose rate is tracked.
	// Default 10,000.
	MaxSources int
}

func (l Limits) withDefaults() Limits {
	if l.MaxFrame == 0 {
		l.MaxFrame = DefaultMaxFrame
	}
	if l.OpenTimeout == 0 {
		l.OpenTimeout = DefaultOpenTimeout
	}
	if l.ConnRate == 0 {
		l.ConnRate = 10
	}
	if l.ConnBurst == 0 {
		l.ConnBurst = 10
	}
	if l.MaxPending == 0 {
		l.MaxPending = 64
	}
	if l.SendQueue == 0 {
		l.SendQueue = 256
	}
	if l.ReplayCache == 0 {
		l.ReplayCache = 100_000
	}
	if l.TokenTTL == 0 {
		l.TokenTTL = time.Minute
	}
	if l.MaxSources == 0 {
		l.MaxSources = 10_000
	}
	return l
}

// PeerConfig is a peer this node knows: one it dials (Addr set), or one
// whose connections it takes with a relationship or key of its own.
type PeerConfig struct {
	// ID is the peer's node id (of this node's network).
	ID string
	// Addr is host:port to dial; "" to take the peer's connections only.
	Addr string
	// Role is what the peer is to this node. Default internal.
	Role Role
	// PSK is the key the peer shares with this node, nil for none.
	PSK *PSK
	// The routing layer's options for the session (the session carries
	// them): the peer's maximum number of prefixes (0: the default) and
	// hold-down past it, whether routes whose origin no authorization
	// covers are refused, and the prefixes taken from this peer only.
	MaxPrefix      int
	HoldDown       time.Duration
	RejectNotFound bool
	Locks          []netip.Prefix
}

// Handler is told what the established sessions carry (the routing layer).
type Handler interface {
	Established(peer string)
	Update(peer string, payload []byte)
	RouteRefresh(peer string)
	Down(peer string, reason string)
}

// Config of a Speaker.
type Config struct {
	// NodeID and Network are this node's.
	NodeID, Network string
	// Memberships are the other networks this node is a member of (each
	// with a speaker of its own); its OPENs name them, so that a peer of
	// a network requiring exclusive membership refuses it.
	Memberships []string
	// Listener, when set, takes the peers' connections; Run closes it.
	Listener net.Listener
	// Dial opens a connection; nil dials TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Peers are the peers this node knows (and dials when Addr is set,
	// or Resolve is). Others may connect too, with the default role and
	// no key.
	Peers []PeerConfig
	// Resolve, if set, gives the address of a peer configured without
	// one at each dial (the gossip node graph); a peer it does not know
	// yet is tried again after the backoff.
	Resolve func(id string) (string, bool)
	// Credentials are this node's certificate and minter.
	Credentials Credentials
	// View is the trust view now (anchors, revocations, nodes, keys).
	View func() trust.View
	// Verifier verifies the tokens of OPENs against the trust view.
	Verifier *identity.Verifier
	// Authorizer decides peer.connect.
	Authorizer *policy.Authorizer
	// Handler, if set, is told of sessions and their UPDATEs.
	Handler Handler
	// HoldTime is the hold time this node proposes; 0 is DefaultHoldTime.
	// NoHoldTime proposes 0: no keepalives, no hold timer.
	HoldTime   time.Duration
	NoHoldTime bool
	// RetryMin, RetryMax bound the reconnection backoff (defaults 1 s, 1 min).
	RetryMin, RetryMax time.Duration
	Limits             Limits
	// Clock is the time of certificate and token checks; nil is time.Now.
	Clock func() time.Time
	// Logger; nil discards.
	Logger hclog.Logger
}

func (c *Config) validate() error {
	switch {
	case c.NodeID == "" || c.Network == "":
		return errors.New("session: the speaker needs this node's id and network")
	case c.Credentials == nil || c.View == nil || c.Verifier == nil || c.Authorizer == nil:
		return errors.New("session: the speaker needs credentials, a trust view, a verifier and an authorizer")
	case c.Limits.MaxFrame != 0 && c.Limits.MaxFrame < MinMaxFrame:
		return fmt.Errorf("session: a frame limit of %d bytes is below the least, %d", c.Limits.MaxFrame, MinMaxFrame)
	}
	if !c.NoHoldTime && c.HoldTime != 0 {
		if err := ValidHoldTime(c.HoldTime); err != nil {
			return err
		}
	}
	if len(c.Memberships) > MaxMemberships {
		return fmt.Errorf("session: %d other memberships, more than %d", len(c.Memberships), MaxMemberships)
	}
	for i, n := range c.Memberships {
		if n == c.Network || (i > 0 && n <= c.Memberships[i-1]) {
			return errors.New("session: the other memberships must be sorted, distinct and not this node's network")
		}
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if err := ValidatePeerID(p.ID); err != nil {
			return fmt.Errorf("session: peer %q: %w", p.ID, err)
		}
		if p.ID == c.NodeID {
			return fmt.Errorf("session: peer %s is this node", p.ID)
		}
		if seen[p.ID] {
			return fmt.Errorf("session: peer %s is configured twice", p.ID)
		}
		seen[p.ID] = true
		if !p.Role.valid() {
			return fmt.Errorf("session: peer %s: unknown role %d", p.ID, p.Role)
		}
	}
	return nil
}

// Errors of the Speaker's operations.
var (
	// ErrUnknownPeer: no session or configuration for that peer.
	ErrUnknownPeer = errors.New("session: no such peer")
	// ErrNotInGraph: a peer configured by node id alone is not in the
	// gossip node graph (yet); the dial is tried again.
	ErrNotInGraph = errors.New("session: the peer is not in the node graph yet (no address to dial)")
	// ErrNotEstablished: the session with the peer is not established.
	ErrNotEstablished = errors.New("session: the session is not established")
)

// Speaker runs this node's peering sessions: it takes the peers'
// connections on its listener, dials the configured peers (reconnecting
// with backoff), and tears down every session whose peer the trust view
// no longer accepts. Make it with New and run it with Run.
type Speaker struct {
	cfg     Config
	log     hclog.Logger
	tr      *transport
	self    identity.SPIFFEID
	metrics *Metrics
	limiter *sourceLimiter
	replay  *replayCache
	ids     atomic.Uint64
	pending atomic.Int64
	trustCh chan struct{}
	rng     *rand.Rand
	rngMu   sync.Mutex

	mu    sync.Mutex
	peers map[string]*peer      // by node id (own network) or SPIFFE ID
	gone  map[string]PeerStatus // the last status of peers not configured whose session ended
	order []string              // of gone, oldest first
	ctx   context.Context
	wg    sync.WaitGroup
}

// New checks cfg; it starts nothing.
func New(cfg Config) (*Speaker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.HoldTime == 0 {
		cfg.HoldTime = DefaultHoldTime
	}
	if cfg.NoHoldTime {
		cfg.HoldTime = 0
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	s := &Speaker{cfg: cfg, log: cfg.Logger, metrics: newMetrics(),
		tr:      &transport{network: cfg.Network, creds: cfg.Credentials, view: cfg.View, clock: cfg.Clock},
		self:    identity.SPIFFEID{Network: cfg.Network, Kind: identity.KindNode, Name: cfg.NodeID},
		limiter: newSourceLimiter(cfg.Limits.ConnRate, cfg.Limits.ConnBurst, cfg.Limits.MaxSources),
		replay:  newReplayCache(cfg.Limits.ReplayCache),
		trustCh: make(chan struct{}, 1), peers: map[string]*peer{}, gone: map[string]PeerStatus{},
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	return s, nil
}

// Metrics are the speaker's counters.
func (s *Speaker) Metrics() *Metrics { return s.metrics }

// WritePrometheus writes the speaker's metrics in the Prometheus text format.
func (s *Speaker) WritePrometheus(w io.Writer) error {
	states := map[State]int{}
	for _, p := range s.Peers() {
		states[p.State]++
	}
	return s.metrics.WritePrometheus(w, states)
}

// TrustChanged tells the speaker the trust view changed: every session is
// checked again, and those of peers it revokes end at once.
func (s *Speaker) TrustChanged() {
	select {
	case s.trustCh <- struct{}{}:
	default:
	}
}

// Run runs the sessions until ctx ends; every session then ends with a
// Cease (shutdown) and the listener is closed. It returns nil then, or the
// listener's failure.
func (s *Speaker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.ctx = ctx
	for _, pc := range s.cfg.Peers {
		s.startPeerLocked(pc.ID, pc, pc.Addr != "" || s.cfg.Resolve != nil, true)
	}
	s.mu.Unlock()
	errc := make(chan error, 1)
	if ln := s.cfg.Listener; ln != nil {
		go func() { errc <- s.accept(ctx, ln) }()
		s.log.Info("taking peering sessions", "addr", ln.Addr().String())
	}
	var err error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err = <-errc:
			done = true
		case <-s.trustCh:
			s.recheck()
		}
	}
	cancel()
	if s.cfg.Listener != nil {
		s.cfg.Listener.Close()
	}
	s.wg.Wait()
	return err
}

// acceptPause is the pause after an accept failure that follows one of
// prev (0 after a success): 5 ms doubling to 1 s, as net/http does, for
// running out of file descriptors and the like.
func acceptPause(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}

// accept takes connections until ln fails or ctx ends.
func (s *Speaker) accept(ctx context.Context, ln net.Listener) error {
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) {
				pause = acceptPause(pause)
				s.log.Warn("accepting a peering connection failed; trying again", "error", err, "retry_in", pause.String())
				select {
				case <-time.After(pause):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("session: listener %s: %w", ln.Addr(), err)
		}
		pause = 0
		src := sourceOf(nc.RemoteAddr())
		if !s.limiter.allow(src) {
			s.metrics.handshakeFailed("rate")
			s.log.Warn("peering connection refused: over the rate per source", "source", src, "rate", s.cfg.Limits.ConnRate)
			nc.Close()
			continue
		}
		if s.pending.Add(1) > int64(s.cfg.Limits.MaxPending) {
			s.pending.Add(-1)
			s.metrics.handshakeFailed("pending_cap")
			s.log.Warn("peering connection refused: too many connections not established", "source", src, "limit", s.cfg.Limits.MaxPending)
			nc.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handshakeInbound(ctx, nc, src)
		}()
	}
}

// handshakeInbound runs the TLS handshake of an accepted connection and
// hands it to the session of the peer its certificate names.
func (s *Speaker) handshakeInbound(ctx context.Context, nc net.Conn, src string) {
	var v verified
	nc.SetDeadline(time.Now().Add(s.cfg.Limits.OpenTimeout))
	tc := tls.Server(nc, s.tr.server(&v))
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.OpenTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.pending.Add(-1)
		reason := handshakeReason(err)
		s.metrics.handshakeFailed(reason)
		s.log.Warn("peering handshake refused", "source", src, "reason", reason, "error", err)
		tc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	c := newConn(s.ids.Add(1), tc, true, v, s.cfg.Limits.SendQueue)
	p := s.peerFor(v.peer)
	if p == nil {
		s.pending.Add(-1)
		c.finish(nil)
		return
	}
	p.post(evInbound{c})
}

// peerFor returns the peer of id, making one for a peer that is not
// configured; nil once the speaker stops.
func (s *Speaker) peerFor(id ca.Identity) *peer {
	key := s.keyOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil
	}
	if p, ok := s.peers[key]; ok {
		return p
	}
	return s.startPeerLocked(key, PeerConfig{ID: key, Role: DefaultRole(key)}, false, false)
}

// DefaultRole is the role of a peer that is not configured, by its key: a
// node of this network (a node id) is internal; a federated network's (a
// SPIFFE ID) is a lateral peer (RFC 9234): it gets this node's own and
// customers' routes only, and what it sends is checked for leaks.
func DefaultRole(key string) Role {
	if strings.HasPrefix(key, "spiffe://") {
		return RolePeer
	}
	return RoleInternal
}

// keyOf names a peer: its node id in this network, its SPIFFE ID in
// another.
func (s *Speaker) keyOf(id ca.Identity) string {
	if id.Network == s.cfg.Network {
		return id.Name
	}
	return id.URI().String()
}

func (s *Speaker) startPeerLocked(key string, pc PeerConfig, dial, configured bool) *peer {
	p := newPeer(s, key, pc, dial)
	p.configured = configured
	s.peers[key] = p
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.run(s.ctx)
	}()
	if dial {
		p.post(EvStart{})
	}
	return p
}

// maxGone bounds the ended sessions of peers not configured that Peers
// still shows.
const maxGone = 1024

// removePeer drops an unconfigured peer whose session ended, keeping its
// last status for Peers.
func (s *Speaker) removePeer(p *peer) {
	st := p.status()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers[p.key] != p {
		return
	}
	delete(s.peers, p.key)
	if _, ok := s.gone[p.key]; !ok {
		s.order = append(s.order, p.key)
		if len(s.order) > maxGone {
			delete(s.gone, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.gone[p.key] = st
}

// recheck ends the sessions of peers the trust view no longer accepts.
func (s *Speaker) recheck() {
	view := s.cfg.View()
	anchors, err := trust.Anchors(view, s.cfg.Network)
	if err != nil {
		s.log.Error("trust anchors unusable; sessions left as they are", "error", err)
		return
	}
	s.mu.Lock()
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	exclusive := trust.Exclusive(view, s.cfg.Network)
	for _, p := range peers {
		p.post(evRecheck{view: view, accepted: anchors.Accepted, exclusive: exclusive})
	}
}

// Peers returns the status of every session, by peer id.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	list := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		list = append(list, p)
	}
	out := make([]PeerStatus, 0, len(list)+len(s.gone))
	for k, st := range s.gone {
		if _, up := s.peers[k]; !up {
			out = append(out, st)
		}
	}
	s.mu.Unlock()
	for _, p := range list {
		out = append(out, p.status())
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Reset ends the session with peer id (Cease, reset) and connects again.
func (s *Speaker) Reset(id string) error {
	p := s.lookup(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	p.post(EvReset{Notification: notification(CodeCease, SubCeaseReset, "reset by the operator")})
	return nil
}

// PeerFailed ends the session with peer id because the gossip node graph
// says the peer failed (dead), unless the session heard from the peer
// within the last keepalive interval (a third of the hold time): a session
// to a node that answers no probe is not kept until its hold timer runs
// out, and a forged failure (memberlist's dead messages are not signed)
// cannot end a session that is alive. A dial is tried again as after any
// reset. It never blocks.
func (s *Speaker) PeerFailed(id string) {
	p := s.lookup(id)
	if p == nil {
		return
	}
	p.mu.Lock()
	hold := time.Duration(p.st.HoldTime) * time.Second
	p.mu.Unlock()
	quiet := s.cfg.Clock().Sub(time.Unix(0, p.heard.Load()))
	if hold > 0 && quiet < hold/3 {
		s.log.Info("the node graph says a peer failed, but its session hears from it; kept", "peer", id, "quiet", quiet.String())
		return
	}
	go p.post(EvReset{Notification: notification(CodeCease, SubCeaseReset, "the node graph says the peer failed")})
}

// HoldDown ends the session with peer id with NOTIFICATION Cease
// "maximum number of prefixes reached" (RFC 4486 subcode 1; reason says
// more) and keeps it down for d: this side dials no sooner and refuses the
// peer's connections meanwhile. An operator's Reset ends it early.
func (s *Speaker) HoldDown(id, reason string, d time.Duration) error {
	p := s.lookup(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	p.post(EvHoldDown{Notification: notification(CodeCease, SubCeaseMaxPrefixes, "%s", reason), For: d})
	return nil
}

// Send sends an UPDATE with payload to peer id.
func (s *Speaker) Send(id string, payload []byte) error {
	p := s.lookup(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	reply := make(chan error, 1)
	p.post(evSend{payload: payload, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-p.done:
		return fmt.Errorf("%w: %s", ErrNotEstablished, id)
	}
}

func (s *Speaker) lookup(id string) *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[id]
}

func (s *Speaker) jitter() *rand.Rand {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64()))
}

// sourceOf is the host of a remote address.
func sourceOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// sourceLimiter is a token bucket per source address, for at most max
// sources (the oldest is forgotten first).
type sourceLimiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	max     int
	buckets map[string]*rate.Limiter
	order   []string
}

func newSourceLimiter(r float64, burst, max int) *sourceLimiter {
	return &sourceLimiter{rate: rate.Limit(r), burst: burst, max: max, buckets: map[string]*rate.Limiter{}}
}

func (l *sourceLimiter) allow(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[src]
	if !ok {
		if len(l.order) >= l.max {
			delete(l.buckets, l.order[0])
			l.order = l.order[1:]
		}
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[src] = b
		l.order = append(l.order, src)
	}
	return b.Allow()
}

// replayCache remembers the jti of every OPEN token until it expires.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[string]time.Time{}}
}

// first records jti (valid until exp) and reports whether it is new. A
// full cache drops what expired; still full, it refuses.
func (r *replayCache) first(jti string, exp, now time.Time) (fresh bool, full bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until, ok := r.seen[jti]; ok && now.Before(until) {
		return false, false
	}
	if len(r.seen) >= r.max {
		for k, until := range r.seen {
			if !now.Before(until) {
				delete(r.seen, k)
			}
		}
		if len(r.seen) >= r.max {
			return false, true
		}
	}
	r.seen[jti] = exp
	return true, false
}
