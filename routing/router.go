package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/keymesh/keymesh/identity"
)

// RouterConfig configures a Router.
type RouterConfig struct {
	// Node and Network are this node's.
	Node, Network string
	// Validator checks what neighbours send.
	Validator *Validator
	// Signer is this node's current signing identity (its node key); a
	// new kid makes the router sign its own routes again once the key is
	// accepted by its own trust view for StageDelay.
	Signer func() (Signer, error)
	// Send sends an UPDATE body to an established neighbour; HoldDown
	// ends a session past its maximum number of prefixes and keeps it
	// down (session.Speaker's Send and HoldDown).
	Send     func(peer string, body []byte) error
	HoldDown func(peer, reason string, d time.Duration) error
	// Policy is a neighbour's import policy and role.
	Policy func(peer string) PeerPolicy
	// Locks are the peer locks.
	Locks []Lock
	// Clock is the time of signatures and freshness; nil is time.Now.
	Clock func() time.Time
	// Refresh is how long after signing the router signs its own routes
	// again (a new sequence number): default a third of the validator's
	// replay window, so they never go stale.
	Refresh time.Duration
	// StageDelay is how long a new key of this node is held in its trust
	// view before routes are signed with it (so the other nodes have it
	// too). Default 2 s.
	StageDelay time.Duration
	// OnChange, if set, is called (on the loop: it must not block) after
	// a RIB changed.
	OnChange func()
	// Logger; nil discards.
	Logger hclog.Logger
}

// Router is a node's routing: the Adj-RIB-In of every neighbour (with what
// was refused and why), the Loc-RIB of best routes, the Adj-RIB-Out of
// every neighbour, and this node's own routes, re-signed before they go
// stale. Its methods hand events to Run's loop; session callbacks never
// wait on the routing.
type Router struct {
	cfg RouterConfig
	log hclog.Logger

	qmu     sync.Mutex
	queue   []any
	queued  map[string]int // UPDATEs waiting, by neighbour
	flooded map[string]bool
	wake    chan struct{}

	// Run's loop alone uses what follows.
	peers  map[string]*rpeer
	local  map[string]*Route // own routes by NLRI
	best   map[string]*Entry // the Loc-RIB
	seqs   map[string]uint64 // highest sequence number by origin and NLRI
	expiry time.Time         // when the first accepted route leaves the replay window
	seq    uint64
	signer Signer
	staged stagedKey

	metrics metrics
}

type stagedKey struct {
	kid  string
	seen time.Time
}

type rpeer struct {
	id     string
	pol    PeerPolicy
	in     map[string]*Entry // Adj-RIB-In, refused routes included
	out    map[string]string // Adj-RIB-Out: NLRI -> what was sent
	warned bool
}

// Entry is a route a RIB holds: where it came from ("" for this node's
// own), its origin validation state, whether it goes on marked
// Only-To-Customer, and why it was refused (nil: accepted).
type Entry struct {
	Route    *Route
	From     string
	State    OriginState
	OTC      bool
	Err      error
	Received time.Time
}

// NewRouter checks cfg.
func NewRouter(cfg RouterConfig) (*Router, error) {
	if err := checkID("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Validator == nil || cfg.Signer == nil || cfg.Send == nil || cfg.HoldDown == nil || cfg.Policy == nil {
		return nil, errors.New("routing: a router needs a validator, a signer, Send, HoldDown and Policy")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = cfg.Validator.ReplayWindow() / 3
	}
	if cfg.StageDelay == 0 {
		cfg.StageDelay = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Router{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), queued: map[string]int{}, flooded: map[string]bool{}, peers: map[string]*rpeer{},
		local: map[string]*Route{}, best: map[string]*Entry{}, seqs: map[string]uint64{}}, nil
}

// Events of the loop.
type (
	evUp     struct{ peer string }
	evDown   struct{ peer string }
	evUpdate struct {
		peer string
		body []byte
	}
	evRefresh struct{ peer string }
	evTrust   struct{}
	evCall    struct {
		fn   func() error
		done chan error
	}
)

func (r *Router) post(ev any) {
	r.qmu.Lock()
	r.queue = append(r.queue, ev)
	r.qmu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Established, Update, RouteRefresh and Down are the session callbacks
// (session.Handler).
func (r *Router) Established(peer string) { r.post(evUp{peer}) }

// MaxQueuedUpdates bounds the UPDATEs of one neighbour waiting for the
// loop; past it the session is held down as past its maximum number of
// prefixes (a neighbour cannot grow the router's memory without bound).
const MaxQueuedUpdates = 1024

func (r *Router) Update(peer string, payload []byte) {
	r.qmu.Lock()
	if r.queued[peer] >= MaxQueuedUpdates {
		first := !r.flooded[peer]
		r.flooded[peer] = true
		r.qmu.Unlock()
		if first {
			r.log.Warn("a neighbour sends UPDATEs faster than they are taken; holding it down", "peer", peer, "queued", MaxQueuedUpdates)
			pol := r.cfg.Policy(peer).withDefaults()
			go r.cfg.HoldDown(peer, fmt.Sprintf("%d UPDATEs wait to be taken", MaxQueuedUpdates), pol.HoldDown) // not on the session's loop
		}
		return
	}
	r.queued[peer]++
	r.qmu.Unlock()
	r.post(evUpdate{peer, payload})
}
func (r *Router) RouteRefresh(peer string)        { r.post(evRefresh{peer}) }
func (r *Router) Down(peer string, reason string) { r.post(evDown{peer}) }

// TrustChanged has every route checked again against the trust view.
func (r *Router) TrustChanged() { r.post(evTrust{}) }

// call runs fn on the loop and waits for it.
func (r *Router) call(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	r.post(evCall{fn: fn, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs the loop until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.qmu.Lock()
		q := r.queue
		r.queue = nil
		r.qmu.Unlock()
		trust := false
		for _, ev := range q {
			if _, ok := ev.(evTrust); ok {
				trust = true // one re-check for a burst of trust changes
				continue
			}
			r.handle(ctx, ev)
		}
		if trust {
			r.handle(ctx, evTrust{})
		}
		if len(q) > 0 {
			if r.nextTimer() <= 0 {
				r.tick(ctx) // due work is not starved by a busy queue
			}
			continue
		}
		timer.Reset(r.nextTimer())
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
			r.tick(ctx)
		}
	}
}

func (r *Router) handle(ctx context.Context, ev any) {
	switch e := ev.(type) {
	case evUp:
		r.qmu.Lock()
		delete(r.flooded, e.peer)
		r.qmu.Unlock()
		p := &rpeer{id: e.peer, pol: r.cfg.Policy(e.peer).withDefaults(), in: map[string]*Entry{}, out: map[string]string{}}
		r.peers[e.peer] = p
		r.flush(p, r.allKeys())
	case evDown:
		p := r.peers[e.peer]
		if p == nil {
			return
		}
		delete(r.peers, e.peer)
		keys := mapKeys(p.in)
		r.changed(keys)
	case evUpdate:
		r.qmu.Lock()
		r.queued[e.peer]--
		r.qmu.Unlock()
		r.receive(ctx, e.peer, e.body)
	case evRefresh:
		if p := r.peers[e.peer]; p != nil {
			clear(p.out)
			r.flush(p, r.allKeys())
		}
	case evTrust:
		r.recheck(ctx)
	case evCall:
		e.done <- e.fn()
	}
}

// receive takes an UPDATE of peer.
func (r *Router) receive(ctx context.Context, peer string, body []byte) {
	p := r.peers[peer]
	if p == nil {
		return // not established: the session layer let nothing through
	}
	u, err := DecodeUpdate(body)
	r.metrics.update(err == nil)
	if err != nil {
		r.log.Warn("UPDATE refused", "peer", peer, "error", err)
		return
	}
	now := r.cfg.Clock()
	var keys []string
	for _, n := range u.Withdraw {
		k := n.String()
		if _, ok := p.in[k]; ok {
			delete(p.in, k)
			keys = append(keys, k)
		}
	}
	for i := range u.Announce {
		rt := &u.Announce[i]
		k := rt.Key()
		e := &Entry{Route: rt, From: peer, Received: now}
		r.admit(ctx, p, e)
		if e.Err != nil {
			r.metrics.refuse(e.Err)
			r.log.Warn("route refused", "peer", peer, "nlri", k, "origin", rt.Origin, "error", e.Err)
			if held := p.in[k]; errors.Is(e.Err, ErrOlder) && held != nil && held.Err == nil {
				continue // ignored: the newer route stays
			}
		}
		p.in[k] = e
		if e.Err == nil {
			r.demote(e)
		}
		keys = append(keys, k)
	}
	if n, limit := len(p.in), p.pol.MaxPrefix; n > limit {
		reason := fmt.Sprintf("maximum number of prefixes reached: %s sent %d, the limit is %d", peer, n, limit)
		r.log.Warn("session over its maximum number of prefixes; holding it down", "peer", peer, "prefixes", n, "limit", limit, "hold_down", p.pol.HoldDown.String())
		r.metrics.mu.Lock()
		r.metrics.holds++
		r.metrics.mu.Unlock()
		if err := r.cfg.HoldDown(peer, reason, p.pol.HoldDown); err != nil {
			r.log.Warn("cannot hold the session down", "peer", peer, "error", err)
		}
		delete(r.peers, peer)
		r.changed(mapKeys(p.in))
		return
	} else if n*100 >= limit*p.pol.WarnPercent && !p.warned {
		p.warned = true
		r.metrics.mu.Lock()
		r.metrics.warned++
		r.metrics.mu.Unlock()
		r.log.Warn("session near its maximum number of prefixes", "peer", peer, "prefixes", n, "limit", limit, "warn_percent", p.pol.WarnPercent)
	}
	r.changed(keys)
}

// admit verifies e's route and applies the import policy, setting e's
// state, OTC and Err.
func (r *Router) admit(ctx context.Context, p *rpeer, e *Entry) {
	r.verify(ctx, p, e)
	if e.Err != nil {
		return
	}
	rt := e.Route
	sk := rt.Network + "|" + rt.Origin + "|" + rt.Key() // node ids repeat across networks
	if have := r.seqs[sk]; rt.Seq < have {
		e.Err = fmt.Errorf("%w (%d, %d held)", ErrOlder, rt.Seq, have)
		return
	}
	r.seqs[sk] = rt.Seq
	r.expiring(rt)
}

// verifyTimeout bounds the key lookups of one route's validation (an
// unknown kid may make the verifier refresh).
const verifyTimeout = 2 * time.Second

// verify validates e's route and applies the import policy, but not the
// sequence number check.
func (r *Router) verify(ctx context.Context, p *rpeer, e *Entry) {
	rt := e.Route
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	if err := r.cfg.Validator.Verify(ctx, rt, p.id); err != nil {
		e.Err = err
		return
	}
	e.State = r.cfg.Validator.Origin(rt)
	otc, err := imports(rt, p.id, r.cfg.Node, p.pol, e.State, r.cfg.Locks)
	if err != nil {
		e.Err = err
		return
	}
	e.OTC = otc
}

// expiring notes when rt leaves the replay window.
func (r *Router) expiring(rt *Route) {
	at := rt.Signed().Add(r.cfg.Validator.ReplayWindow())
	if r.expiry.IsZero() || at.Before(r.expiry) {
		r.expiry = at
	}
}

// demote refuses, at the other neighbours, the routes of e's origin for
// its NLRI with an older sequence number (the caller chooses the best
// route of the NLRI again).
func (r *Router) demote(e *Entry) {
	rt, k := e.Route, e.Route.Key()
	for id, p := range r.peers {
		o := p.in[k]
		if id == e.From || o == nil || o.Err != nil || o.Route.Origin != rt.Origin || o.Route.Network != rt.Network || o.Route.Seq >= rt.Seq {
			continue
		}
		p.in[k] = &Entry{Route: o.Route, From: o.From, Received: o.Received, State: o.State,
			Err: fmt.Errorf("%w (%d, %d held)", ErrOlder, o.Route.Seq, rt.Seq)}
	}
}

// sweep refuses the routes that left the replay window since they came
// (their origin did not sign them again), and forgets the sequence
// numbers of routes no neighbour holds.
func (r *Router) sweep() {
	r.expiry = time.Time{}
	var keys []string
	held := map[string]bool{}
	for _, p := range r.peers {
		for k, e := range p.in {
			held[e.Route.Origin+"|"+k] = true
			if e.Err != nil {
				continue
			}
			if err := r.cfg.Validator.Fresh(e.Route); err != nil {
				p.in[k] = &Entry{Route: e.Route, From: e.From, Received: e.Received, State: e.State, Err: err}
				keys = append(keys, k)
				continue
			}
			r.expiring(e.Route)
		}
	}
	for sk := range r.seqs {
		if !held[sk] {
			delete(r.seqs, sk)
		}
	}
	r.changed(keys)
}

// recheck takes every route through the trust view again: keys revoked or
// retired, authorizations changed, keys that are now accepted.
func (r *Router) recheck(ctx context.Context) {
	// Verify everything again; then the sequence numbers from what is
	// accepted now (a revoked origin's numbers go with its routes).
	type was struct {
		ok    bool
		state OriginState
		otc   bool
	}
	before := map[*Entry]was{}
	fresh := map[*rpeer]map[string]*Entry{}
	clear(r.seqs)
	for _, p := range r.peers {
		fresh[p] = map[string]*Entry{}
		for k, e := range p.in {
			before[e] = was{e.Err == nil, e.State, e.OTC}
			f := &Entry{Route: e.Route, From: e.From, Received: e.Received}
			r.verify(ctx, p, f)
			fresh[p][k] = f
			if f.Err == nil {
				sk := f.Route.Origin + "|" + k
				r.seqs[sk] = max(r.seqs[sk], f.Route.Seq)
			}
		}
	}
	r.expiry = time.Time{}
	var keys []string
	for p, m := range fresh {
		for k, f := range m {
			if f.Err == nil {
				if have := r.seqs[f.Route.Origin+"|"+k]; f.Route.Seq < have {
					f.Err = fmt.Errorf("%w (%d, %d held)", ErrOlder, f.Route.Seq, have)
				} else {
					r.expiring(f.Route)
				}
			}
			old := p.in[k]
			if w := before[old]; w.ok != (f.Err == nil) || w.state != f.State || w.otc != f.OTC {
				p.in[k] = f
				keys = append(keys, k)
			} else if f.Err != nil {
				p.in[k] = f // the reason may have changed
			}
		}
	}
	r.resign()
	r.changed(append(keys, mapKeys(r.local)...))
}

// Announce originates a route for n (this node's), signed now.
func (r *Router) Announce(ctx context.Context, n NLRI, nextHop string, meta map[string]string) (*Route, error) {
	var out *Route
	err := r.call(ctx, func() error {
		s, err := r.cfg.Signer()
		if err != nil {
			return err
		}
		if r.signer.Key == nil {
			r.signer = s
		}
		rt, err := r.originate(s, n, nextHop, meta)
		if err != nil {
			return err
		}
		r.local[n.String()] = rt
		r.changed([]string{n.String()})
		out = rt
		return nil
	})
	if err != nil {
		return nil, err // announced or not: fn may still run
	}
	return out, nil
}

// ErrNoRoute: this node originates no route for the NLRI.
var ErrNoRoute = errors.New("routing: no route of this node for the NLRI")

// Withdraw stops originating n.
func (r *Router) Withdraw(ctx context.Context, n NLRI) error {
	return r.call(ctx, func() error {
		if _, ok := r.local[n.String()]; !ok {
			return fmt.Errorf("%w: %s", ErrNoRoute, n)
		}
		delete(r.local, n.String())
		r.changed([]string{n.String()})
		return nil
	})
}

func (r *Router) originate(s Signer, n NLRI, nextHop string, meta map[string]string) (*Route, error) {
	now := r.cfg.Clock()
	r.seq = max(r.seq+1, uint64(now.UnixNano()))
	rt := &Route{NLRI: n, Origin: r.cfg.Node, Network: r.cfg.Network, NextHop: nextHop, Meta: meta, SignedAt: now.Unix(), Seq: r.seq}
	if err := rt.checkBody(); err != nil {
		return nil, err
	}
	if err := rt.Sign(s); err != nil {
		return nil, err
	}
	return rt, nil
}

// resign signs this node's routes again where they near the end of the
// replay window or where a new key of this node is staged long enough.
func (r *Router) resign() {
	now := r.cfg.Clock()
	s, err := r.cfg.Signer()
	if err != nil {
		r.log.Warn("cannot sign routes", "error", err)
		return
	}
	if r.signer.Key == nil {
		r.signer = s
	}
	newKey := false
	if s.KID != r.signer.KID {
		if r.staged.kid != s.KID {
			r.staged = stagedKey{kid: s.KID, seen: time.Time{}}
		}
		if r.staged.seen.IsZero() {
			if _, err := r.cfg.Validator.cfg.Keys.SignerKey(context.Background(), s.KID, now); err == nil {
				r.staged.seen = now
				r.log.Info("new route key staged", "kid", s.KID, "use_at", now.Add(r.cfg.StageDelay))
			}
		}
		newKey = !r.staged.seen.IsZero() && now.Sub(r.staged.seen) >= r.cfg.StageDelay
	}
	var keys []string
	for k, rt := range r.local {
		if !newKey && now.Sub(rt.Signed()) < r.cfg.Refresh {
			continue
		}
		fresh, err := r.originate(s, rt.NLRI, rt.NextHop, rt.Meta)
		if err != nil {
			r.log.Warn("cannot sign a route again", "nlri", k, "error", err)
			continue
		}
		r.local[k] = fresh
		keys = append(keys, k)
	}
	r.changed(keys)
	if newKey {
		r.signer = s
		r.log.Info("routes signed with the new key", "kid", s.KID, "routes", len(keys))
		// The segments this node signed for others' routes too.
		all := r.allKeys()
		for _, id := range sortedKeys(r.peers) {
			r.flush(r.peers[id], all)
		}
	}
}

// nextTimer is the pause until resign has work.
func (r *Router) nextTimer() time.Duration {
	now := r.cfg.Clock()
	next := time.Hour
	if !r.expiry.IsZero() {
		next = min(next, max(r.expiry.Sub(now), 0))
	}
	for _, rt := range r.local {
		next = min(next, max(rt.Signed().Add(r.cfg.Refresh).Sub(now), 0))
	}
	if s, err := r.cfg.Signer(); err == nil && r.signer.Key != nil && s.KID != r.signer.KID && r.staged.seen.IsZero() {
		next = min(next, 500*time.Millisecond) // a new key: is it in the trust view yet?
	} else if r.staged.kid != "" && r.staged.kid != r.signer.KID {
		if r.staged.seen.IsZero() {
			next = min(next, 500*time.Millisecond)
		} else {
			next = min(next, max(r.staged.seen.Add(r.cfg.StageDelay).Sub(now), 0))
		}
	}
	return next
}

func (r *Router) tick(context.Context) {
	if !r.expiry.IsZero() && !r.cfg.Clock().Before(r.expiry) {
		r.sweep()
	}
	r.resign()
}

// changed chooses the best route of keys again and sends what changed.
func (r *Router) changed(keys []string) {
	if r.cfg.OnChange != nil {
		defer r.cfg.OnChange()
	}
	defer func() {
		in := 0
		for _, p := range r.peers {
			in += len(p.in)
		}
		r.metrics.sizes(in, len(r.best), len(r.local))
	}()
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var moved []string
	for _, k := range keys {
		old := r.best[k]
		nb := r.choose(k)
		if nb == nil {
			delete(r.best, k)
		} else {
			r.best[k] = nb
		}
		if old != nb {
			moved = append(moved, k)
		}
	}
	if len(moved) == 0 {
		return
	}
	for _, id := range sortedKeys(r.peers) {
		r.flush(r.peers[id], moved)
	}
}

// choose is the best route for k: this node's own, then by origin state
// (valid before not-found), then the shorter path, then the neighbour's
// id, the origin's id and the higher sequence number.
func (r *Router) choose(k string) *Entry {
	if rt := r.local[k]; rt != nil {
		if e := r.best[k]; e != nil && e.Route == rt {
			return e
		}
		return &Entry{Route: rt, State: r.cfg.Validator.Origin(rt)}
	}
	var best *Entry
	for _, p := range r.peers {
		e := p.in[k]
		if e == nil || e.Err != nil {
			continue
		}
		if best == nil || better(e, best) {
			best = e
		}
	}
	return best
}

func better(a, b *Entry) bool {
	if a.State != b.State {
		return a.State < b.State
	}
	if la, lb := len(a.Route.Path), len(b.Route.Path); la != lb {
		return la < lb
	}
	if a.From != b.From {
		return a.From < b.From
	}
	if a.Route.Origin != b.Route.Origin {
		return a.Route.Origin < b.Route.Origin
	}
	return a.Route.Seq > b.Route.Seq
}

// maxUpdateBytes bounds an UPDATE body below the session's frame limit.
const maxUpdateBytes = 48 << 10

// flush sends p what changed among keys: the best routes it may have,
// forward-signed to it, and withdrawals of what it had.
func (r *Router) flush(p *rpeer, keys []string) {
	s, err := r.cfg.Signer()
	if err != nil {
		r.log.Warn("cannot sign routes", "error", err)
		return
	}
	if r.signer.KID != "" {
		s = r.signerFor(s)
	}
	var u Update
	size := 0
	send := func() {
		if len(u.Announce)+len(u.Withdraw) == 0 {
			return
		}
		body, err := EncodeUpdate(u)
		if err == nil {
			err = r.cfg.Send(p.id, body)
		}
		if err != nil {
			r.log.Warn("cannot send an UPDATE", "peer", p.id, "error", err)
		}
		u, size = Update{}, 0
	}
	for _, k := range keys {
		e := r.best[k]
		var fwd *Route
		if e != nil && e.From != p.id && !slices.Contains(e.Route.Nodes(), nodeOf(p.id)) && exports(e.OTC, p.pol.Role) {
			fp := fingerprint(e.Route, s.KID)
			if p.out[k] == fp {
				continue
			}
			f, err := e.Route.Forward(s, p.id, marks(e.OTC, p.pol.Role))
			if err != nil {
				r.log.Warn("cannot sign a route for a neighbour", "peer", p.id, "nlri", k, "error", err)
				continue
			}
			fwd = f
			p.out[k] = fp
		} else if _, had := p.out[k]; had {
			delete(p.out, k)
			u.Withdraw = append(u.Withdraw, withdrawn(e, k))
			size += len(k) + 4
		} else {
			continue
		}
		if fwd != nil {
			b, _ := fwd.Encode()
			if size+len(b) > maxUpdateBytes || len(u.Announce) >= MaxUpdateRoutes {
				send()
			}
			u.Announce = append(u.Announce, *fwd)
			size += len(b)
		}
		if len(u.Withdraw) >= MaxUpdateRoutes || size > maxUpdateBytes {
			send()
		}
	}
	send()
}

// signerFor keeps signing with the key routes are signed with until a new
// one is staged long enough.
func (r *Router) signerFor(cur Signer) Signer {
	if cur.KID == r.signer.KID || r.signer.Key == nil {
		return cur
	}
	return r.signer
}

// withdrawn is the NLRI of key k to withdraw (e, if any, holds it).
func withdrawn(e *Entry, k string) NLRI {
	if e != nil {
		return e.Route.NLRI
	}
	n, _ := ParseNLRI(k)
	return n
}

// fingerprint names what was sent for a route: its origin signature, its
// last segment and the key this node signs with.
func fingerprint(rt *Route, kid string) string {
	var b strings.Builder
	b.Write(rt.Sig)
	if len(rt.Path) > 0 {
		b.Write(rt.Path[len(rt.Path)-1].Sig)
	}
	b.WriteString(kid)
	return b.String()
}

func (r *Router) allKeys() []string {
	keys := mapKeys(r.best)
	slices.Sort(keys)
	return keys
}

func sortedKeys[V any](m map[string]V) []string {
	keys := mapKeys(m)
	slices.Sort(keys)
	return keys
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// RouteStatus is a route as `keymesh routes list` shows it.
type RouteStatus struct {
	NLRI     string    `json:"nlri"`
	Origin   string    `json:"origin"`
	Path     []string  `json:"path"` // node ids, the origin first, this node's neighbour last
	From     string    `json:"from,omitempty"`
	State    string    `json:"state"` // valid, not-found, invalid ("" when refused before)
	Best     bool      `json:"best"`
	Local    bool      `json:"local,omitempty"`
	OTC      bool      `json:"otc,omitempty"`
	Rejected string    `json:"rejected,omitempty"`
	SignedAt time.Time `json:"signed_at"`
	Seq      uint64    `json:"seq"`
	KID      string    `json:"kid"`
	NextHop  string    `json:"next_hop,omitempty"`
}

// Routes lists this node's own routes and every neighbour's (only peer's
// when peer is not ""), refused ones with the reason, sorted by NLRI and
// neighbour.
func (r *Router) Routes(ctx context.Context, peer string) ([]RouteStatus, error) {
	var out []RouteStatus
	err := r.call(ctx, func() error {
		status := func(e *Entry, best bool) RouteStatus {
			rt := e.Route
			st := RouteStatus{NLRI: rt.Key(), Origin: rt.Origin, Path: rt.Nodes(), From: e.From, Best: best, Local: e.From == "",
				OTC: e.OTC, SignedAt: rt.Signed().UTC(), Seq: rt.Seq, KID: rt.KID, NextHop: rt.NextHop}
			if e.State != 0 {
				st.State = e.State.String()
			}
			if e.Err != nil {
				st.Rejected = e.Err.Error()
			}
			return st
		}
		if peer == "" {
			for k, rt := range r.local {
				b := r.best[k]
				e := &Entry{Route: rt, State: r.cfg.Validator.Origin(rt)}
				out = append(out, status(e, b != nil && b.Route == rt))
			}
		}
		for id, p := range r.peers {
			if peer != "" && id != peer {
				continue
			}
			for k, e := range p.in {
				out = append(out, status(e, r.best[k] == e))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err // fn may still run: out is not ours to read
	}
	slices.SortFunc(out, func(a, b RouteStatus) int {
		if c := strings.Compare(a.NLRI, b.NLRI); c != 0 {
			return c
		}
		return strings.Compare(a.From, b.From)
	})
	return out, nil
}

// KeyStatus is the stage of this node's route key: the kid its routes are
// signed with, and a new one waiting (staged: in this node's trust view
// since StagedSince, used from UseAt).
type KeyStatus struct {
	KID         string    `json:"kid"`
	Staged      string    `json:"staged,omitempty"`
	StagedSince time.Time `json:"staged_since,omitzero"`
	UseAt       time.Time `json:"use_at,omitzero"`
	Routes      int       `json:"routes"` // this node's own
	Best        int       `json:"best"`   // NLRIs in the Loc-RIB
}

// Keys reports the route key's stage.
func (r *Router) Keys(ctx context.Context) (KeyStatus, error) {
	var ks KeyStatus
	err := r.call(ctx, func() error {
		ks = KeyStatus{KID: r.signer.KID, Routes: len(r.local), Best: len(r.best)}
		cur, err := r.cfg.Signer()
		if err != nil || r.signer.Key == nil || cur.KID == r.signer.KID {
			return nil
		}
		ks.Staged = cur.KID // a new key, waiting for its stage
		if r.staged.kid == cur.KID && !r.staged.seen.IsZero() {
			ks.StagedSince, ks.UseAt = r.staged.seen.UTC(), r.staged.seen.Add(r.cfg.StageDelay).UTC()
		}
		return nil
	})
	if err != nil {
		return KeyStatus{}, err
	}
	return ks, nil
}

// nodeOf is the node id of a session's peer key: the key itself for a
// peer of this network, the name of its SPIFFE ID for a federated
// network's (the speaker keys those by SPIFFE ID, and a segment names
// such a target by it).
func nodeOf(peer string) string {
	if id, err := identity.ParseSPIFFEID(peer); err == nil {
		return id.Name
	}
	return peer
}
