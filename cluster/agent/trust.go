package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// fileTrust is the persisted trust document in a node's data directory.
const fileTrust = "trust.json"

// TrustPath is where a node keeps the last trust document it followed.
func TrustPath(dir string) string { return filepath.Join(dir, fileTrust) }

// Errors of the trust follower.
var (
	// ErrTrustFile: trust.json is damaged, of an unknown version or of
	// another network. The follower starts without it and fetches anew.
	ErrTrustFile = errors.New("agent: persisted trust document unusable")
	// ErrOtherNetwork: a root server answered with the trust document of
	// another network.
	ErrOtherNetwork = errors.New("agent: trust document of another network")
	// ErrNoServers: the follower knows no root server to ask.
	ErrNoServers = errors.New("agent: no root server to follow; node.json names none")
)

// maxTrustFile bounds trust.json when it is read back.
const maxTrustFile = 64 << 20

// TrustSource answers the blocking trust query of one root server:
// *client.Client does, over mutual TLS with the node certificate.
type TrustSource interface {
	// Trust returns once the server's state index passes index, or after
	// wait, with the trust.Delta since index (a full document for index
	// 0, with full, or when the server's history no longer covers index).
	Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error)
	// Close releases the source's connections.
	Close()
}

// FollowerConfig configures a Follower. Zero fields take the defaults.
type FollowerConfig struct {
	// DataDir is the node's data directory, where trust.json is kept
	// (required).
	DataDir string
	// Network is the node's network; documents of another are refused
	// (required).
	Network string
	// Servers are root server API addresses to start from (host:port). The
	// api_addr of every root server in each followed document is added,
	// unless Pinned.
	Servers []string
	// Pinned keeps the follower on Servers alone: a site that reaches the
	// roots through a relay or a load balancer, never directly.
	Pinned bool
	// Dial makes the TrustSource of one root server (required; Run dials
	// HTTPS with the node certificate).
	Dial func(server string) (TrustSource, error)
	// Wait is how long one blocking query may wait at a server. Default 30s.
	Wait time.Duration
	// MinBackoff is the pause after every server failed once in a row; it
	// doubles after each further round, up to MaxBackoff. A failed server
	// is left for the next one at once. Defaults 250ms and 30s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// RefreshTimeout bounds Refresh (a verifier meeting an unknown kid).
	// Default 2s.
	RefreshTimeout time.Duration
	// PersistInterval is the least time between two writes of trust.json:
	// changes within it are written together (the file holds the whole
	// state, so a burst of revocations costs one write, not one each). The
	// state at stop is always written; a restart fetches what the file
	// misses as a delta. Default 1s.
	PersistInterval time.Duration
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// After returns a channel that receives once d has passed; nil means
	// time.After. Tests drive the backoff with a fake.
	After func(d time.Duration) <-chan time.Time
	// Logger receives structured logs; nil discards them.
	Logger hclog.Logger
	// OnChange, if set, is called after each newer state is in place,
	// with the previous one (nil at first) and the new one. Calls are
	// serialised and come before the state is persisted.
	OnChange func(prev, cur *trust.State)
	// OnRevoked, if set, is called when a root server refuses this node
	// because its node, certificate (or an issuer above it) or key is
	// revoked: a revoked node cannot read the trust state that revokes
	// it, the refusal is how it learns.
	OnRevoked func(err error)
	// OnBulletins, if set, is given the signed bulletins of each answer
	// that carries revocations (to gossip them), after the answer is
	// applied.
	OnBulletins func([][]byte)
}

func (c FollowerConfig) withDefaults() FollowerConfig {
	if c.Wait == 0 {
		c.Wait = 30 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.RefreshTimeout == 0 {
		c.RefreshTimeout = 2 * time.Second
	}
	if c.PersistInterval == 0 {
		c.PersistInterval = time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

func (c FollowerConfig) validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("agent: trust follower needs the node's data directory")
	case c.Network == "":
		return errors.New("agent: trust follower needs the node's network")
	case c.Dial == nil:
		return errors.New("agent: trust follower needs a Dial function")
	case c.Wait < 0, c.MinBackoff < 0, c.MaxBackoff < 0, c.RefreshTimeout < 0, c.PersistInterval < 0:
		return fmt.Errorf("agent: trust follower durations must not be negative (wait %s, backoff %s..%s, refresh %s, persist %s)",
			c.Wait, c.MinBackoff, c.MaxBackoff, c.RefreshTimeout, c.PersistInterval)
	case c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("agent: trust follower backoff starts at %s, above its cap %s", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// FollowerStatus says where a Follower stands.
type FollowerStatus struct {
	// Index is the state index of the current document (0: none yet).
	Index uint64 `json:"index"`
	// Server is the root server followed now.
	Server string `json:"server"`
	// Servers are all the root servers the follower knows.
	Servers []string `json:"servers"`
	// LastContact is when a root server last answered (zero: never since
	// start; the document may come from trust.json).
	LastContact time.Time `json:"last_contact,omitzero"`
	// Failures counts failed queries since the last answer.
	Failures int `json:"failures"`
	// LastError is the last failure, "" after an answer.
	LastError string `json:"last_error,omitempty"`
	// FullDocuments counts the full documents asked for because a delta
	// did not apply.
	FullDocuments int `json:"full_documents"`
	// Persisted is the index of the state on disk (trust.json and its
	// journal); a restart starts there.
	Persisted uint64 `json:"persisted_index"`
}

// Follower follows the trust state of the root servers with blocking
// queries on /v1/trust, resuming from its last index, and fails over to
// the other root servers when its server is unreachable. Each answer is a
// trust.Delta applied to the current trust.State; a delta that does not
// apply (a gap: it starts at another index) makes the follower ask for a
// full document, never guess. Each newer state is swapped in (State),
// handed to OnChange, and persisted to trust.json (by Run, in the
// background, the newest state at a time), from which a restarted
// follower starts at once, offline.
//
// A Follower is also an identity.Refresher (through the agent's key
// source): Refresh fetches the changes at once.
type Follower struct {
	cfg FollowerConfig
	log hclog.Logger

	cur   atomic.Pointer[trust.State]
	empty *trust.State

	applyMu sync.Mutex // serialises apply: swap, OnChange
	dirty   chan struct{}

	// What the persist loop writes next: the deltas applied since its
	// last write, or a snapshot (a full document was applied, or too many
	// deltas wait).
	persistMu   sync.Mutex
	pending     []trust.Delta
	pendingSnap bool
	store       *trustStore
	persisted   atomic.Uint64                 // the index on disk
	wrote       atomic.Pointer[chan struct{}] // closed and replaced at each write
	changed     atomic.Pointer[chan struct{}] // closed and replaced at each new state

	mu          sync.Mutex // guards the fields below
	servers     []string
	server      string // the one followed now
	sources     map[string]TrustSource
	lastContact time.Time
	failures    int
	lastErr     string
	fulls       int // full documents fetched because a delta did not apply

	refreshMu sync.Mutex
}

// NewFollower checks cfg and loads trust.json if there is one. A damaged
// trust.json is logged and ignored (the follower fetches anew); cfg
// errors are returned.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(cfg.DataDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("agent: the node's data directory %s is not a directory (%v); run `keymesh node join` first", cfg.DataDir, err)
	}
	f := &Follower{cfg: cfg, log: cfg.Logger, sources: map[string]TrustSource{},
		empty: trust.Empty(cfg.Network), dirty: make(chan struct{}, 1)}
	ch, wrote := make(chan struct{}), make(chan struct{})
	f.changed.Store(&ch)
	f.wrote.Store(&wrote)
	f.setServers(nil)
	st, replayed, jerr, err := loadTrust(cfg.DataDir, cfg.Network)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.store = newTrustStore(cfg.DataDir, 0, true)
	case err != nil:
		f.log.Error("ignoring the persisted trust document; fetching it anew", "path", TrustPath(cfg.DataDir), "error", err)
		f.store = newTrustStore(cfg.DataDir, 0, true)
	default:
		if jerr != nil {
			// What follows the damage is lost; the roots send it again.
			f.log.Warn("the trust journal is damaged after the changes read; the next write starts it over",
				"path", JournalPath(cfg.DataDir), "changes_read", replayed, "error", jerr)
		}
		f.store = newTrustStore(cfg.DataDir, st.Index(), jerr != nil)
		f.persisted.Store(st.Index())
		f.cur.Store(st)
		f.setServers(st.Servers())
		revs, keys, _ := st.Sizes()
		f.log.Info("trust state loaded from the data directory", "index", st.Index(), "journal_changes", replayed, "keys", keys, "revocations", revs)
	}
	return f, nil
}

// Changed returns a channel that is closed once the state after the
// current one is in place: a reader waits for news without polling.
func (f *Follower) Changed() <-chan struct{} { return *f.changed.Load() }

// WaitFor blocks until cond holds on the current state (checked now and
// after each change), or ctx ends.
func (f *Follower) WaitFor(ctx context.Context, cond func(trust.View) bool) error {
	for {
		ch := f.Changed()
		if cond(f.State()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitPersisted blocks until the state on disk is at index or later, or
// ctx ends.
func (f *Follower) WaitPersisted(ctx context.Context, index uint64) error {
	for {
		ch := *f.wrote.Load()
		if f.persisted.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Current is the current trust state, nil before the first.
func (f *Follower) Current() *trust.State { return f.cur.Load() }

// State is the current trust state (an empty one before the first), for
// trust.Keys and everything that checks against it.
func (f *Follower) State() trust.View {
	if x := f.cur.Load(); x != nil {
		return x
	}
	return f.empty
}

// Index is the state index of the current state, 0 before the first.
func (f *Follower) Index() uint64 {
	if x := f.cur.Load(); x != nil {
		return x.Index()
	}
	return 0
}

// Status says which server is followed, how far and how well.
func (f *Follower) Status() FollowerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FollowerStatus{Index: f.Index(), Server: f.server, Servers: slices.Clone(f.servers),
		LastContact: f.lastContact, Failures: f.failures, LastError: f.lastErr, FullDocuments: f.fulls,
		Persisted: f.persisted.Load()}
}

// setServers makes the server list: the configured servers, then the
// api_addr of every root server of the document not removed. The server
// followed now stays if it is still listed.
func (f *Follower) setServers(docServers []fsm.Server) {
	list := slices.Clone(f.cfg.Servers)
	if f.cfg.Pinned {
		docServers = nil
	}
	for _, s := range docServers {
		if s.APIAddr != "" && s.Status != fsm.ServerRemoved {
			list = append(list, s.APIAddr)
		}
	}
	seen := map[string]bool{}
	list = slices.DeleteFunc(list, func(a string) bool {
		dup := a == "" || seen[a]
		seen[a] = true
		return dup
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, src := range f.sources {
		if !seen[addr] {
			src.Close()
			delete(f.sources, addr)
		}
	}
	f.servers = list
	if !slices.Contains(list, f.server) {
		f.server = ""
		if len(list) > 0 {
			f.server = list[0]
		}
	}
}

// source returns the server followed now and its TrustSource.
func (f *Follower) source() (string, TrustSource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sourceLocked(f.server)
}

func (f *Follower) sourceLocked(server string) (string, TrustSource, error) {
	if server == "" {
		return "", nil, ErrNoServers
	}
	if src, ok := f.sources[server]; ok {
		return server, src, nil
	}
	src, err := f.cfg.Dial(server)
	if err != nil {
		return server, nil, fmt.Errorf("agent: root server %s: %w", server, err)
	}
	f.sources[server] = src
	return server, src, nil
}

// failed records a failure at server and moves on to the next server. It
// returns the failures in a row and how many servers there are.
func (f *Follower) failed(server string, err error) (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures++
	f.lastErr = err.Error()
	if i := slices.Index(f.servers, server); i >= 0 && f.server == server {
		f.server = f.servers[(i+1)%len(f.servers)]
	}
	return f.failures, max(len(f.servers), 1)
}

func (f *Follower) answered() {
	f.mu.Lock()
	f.failures, f.lastErr, f.lastContact = 0, "", f.cfg.Clock()
	f.mu.Unlock()
}

// Run follows the trust state until ctx ends; it returns nil then. Errors
// of the servers are logged and retried (failover, capped backoff).
func (f *Follower) Run(ctx context.Context) error {
	defer f.closeSources()
	// The persist loop ends after this one, so that an answer applied
	// while ctx ends is written too.
	stop, persisted := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(persisted)
		f.persistLoop(stop)
	}()
	defer func() {
		close(stop)
		<-persisted
	}()
	f.log.Info("following the trust state", "servers", f.Status().Servers, "index", f.Index())
	var throttle time.Duration // the longest Retry-After of this round of failures
	for ctx.Err() == nil {
		server, src, err := f.source()
		var progressed bool
		start := f.cfg.Clock()
		if err == nil {
			before := f.Index()
			err = f.follow(ctx, src, server, f.cfg.Wait)
			progressed = f.Index() > before
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			f.answered()
			throttle = 0
			// A server that answers at once without news (a short MaxWait,
			// a replica behind us) is asked again no faster than MinBackoff.
			if !progressed && f.cfg.Clock().Sub(start) < f.cfg.MinBackoff {
				if !f.pause(ctx, f.cfg.MinBackoff) {
					return nil
				}
			}
			continue
		}
		if revokedRefusal(err) && f.cfg.OnRevoked != nil {
			f.cfg.OnRevoked(err)
		}
		failures, n := f.failed(server, err)
		if wait := throttled(err); wait > 0 {
			throttle = max(throttle, wait)
		}
		if failures%n != 0 {
			f.log.Warn("root server failed; trying the next", "server", server, "failures", failures, "error", err)
			continue
		}
		d := f.backoff(failures / n)
		if throttle > 0 {
			// Every root asked is full or throttles this node: come back
			// after the longest Retry-After, spread so that the followers
			// turned away together do not return together.
			d = max(d, throttle+rand.N(throttle/2+1))
			throttle = 0
		}
		f.log.Warn("no root server answers; backing off", "server", server, "failures", failures, "retry_in", d.String(), "error", err)
		if !f.pause(ctx, d) {
			return nil
		}
	}
	return nil
}

// throttled is the Retry-After of a root that turned the query away (429:
// its blocking queries are at their cap), 0 for other errors.
func throttled(err error) time.Duration {
	var ae *api.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
		return max(ae.RetryAfter, time.Second)
	}
	return 0
}

// backoff is the pause after rounds full rounds of failures (rounds >= 1).
func (f *Follower) backoff(rounds int) time.Duration {
	d := f.cfg.MinBackoff
	for i := 1; i < rounds && d < f.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, f.cfg.MaxBackoff)
}

// pause waits d; false when ctx ended first.
func (f *Follower) pause(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-f.cfg.After(d):
		return true
	}
}

func (f *Follower) closeSources() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, src := range f.sources {
		src.Close()
		delete(f.sources, addr)
	}
}

// Refresh asks the root servers for the changes since the current state
// at once (no blocking wait), starting with the one followed now, within
// RefreshTimeout. Concurrent calls share one fetch at a time.
func (f *Follower) Refresh(ctx context.Context) error {
	f.refreshMu.Lock()
	defer f.refreshMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, f.cfg.RefreshTimeout)
	defer cancel()
	f.mu.Lock()
	order := slices.Clone(f.servers)
	if i := slices.Index(order, f.server); i > 0 {
		order = append(order[i:], order[:i]...)
	}
	f.mu.Unlock()
	err := ErrNoServers
	for _, server := range order {
		f.mu.Lock()
		_, src, derr := f.sourceLocked(server)
		f.mu.Unlock()
		if derr != nil {
			err = derr
			continue
		}
		terr := f.follow(ctx, src, server, 0)
		if terr == nil {
			return nil
		}
		err = terr
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("agent: refreshing the trust state: %w", err)
}

// follow asks src for the changes since the current state (waiting up to
// wait) and applies them; a delta that does not apply makes it ask src for
// a full document once.
func (f *Follower) follow(ctx context.Context, src TrustSource, server string, wait time.Duration) error {
	index := f.Index()
	d, err := src.Trust(ctx, index, wait, index == 0)
	if err != nil {
		return err
	}
	err = f.apply(d, server)
	if !errors.Is(err, trust.ErrGap) {
		return err
	}
	f.mu.Lock()
	f.fulls++
	f.mu.Unlock()
	f.log.Warn("a trust delta did not apply; fetching the full document", "server", server, "index", index, "error", err)
	if d, err = src.Trust(ctx, f.Index(), 0, true); err != nil {
		return err
	}
	return f.apply(d, server)
}

// apply puts the state d brings the current one to in place, if it is
// newer.
func (f *Follower) apply(d trust.Delta, server string) error {
	if d.Network != f.cfg.Network {
		return fmt.Errorf("%w: %s answered for %q, this node is of %q", ErrOtherNetwork, server, d.Network, f.cfg.Network)
	}
	if bs := d.Bulletins; len(bs) > 0 && f.cfg.OnBulletins != nil {
		defer f.cfg.OnBulletins(bs)
	}
	d.Bulletins = nil // not part of the state, nor of trust.json
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	prev := f.cur.Load()
	if prev != nil && d.Index <= prev.Index() && (d.Reset || d.Empty()) {
		return nil // a replica behind this state, or no news
	}
	var next *trust.State
	var err error
	switch {
	case prev == nil && !d.Reset:
		return fmt.Errorf("%w: a delta without a state to apply it to", trust.ErrGap)
	case prev == nil:
		next, err = trust.NewState(d)
	default:
		next, err = prev.Apply(d)
	}
	if err != nil {
		return fmt.Errorf("agent: trust answer of %s: %w", server, err)
	}
	if next == prev {
		return nil
	}
	f.cur.Store(next)
	f.setServers(next.Servers())
	if f.cfg.OnChange != nil {
		f.cfg.OnChange(prev, next)
	}
	ch := make(chan struct{})
	close(*f.changed.Swap(&ch))
	f.log.Debug("trust state updated", "index", next.Index(), "server", server, "delta", !d.Reset)
	f.persistMu.Lock()
	if d.Reset || len(f.pending) >= maxPendingDeltas {
		f.pending, f.pendingSnap = nil, true
	} else {
		f.pending = append(f.pending, d)
	}
	f.persistMu.Unlock()
	select {
	case f.dirty <- struct{}{}:
	default:
	}
	return nil
}

// ApplyRevocations puts revocations into the current state at once,
// without moving its index (a verified bulletin: the trust sync brings
// the same revocations, and the state persisted is the synced one plus
// these). It returns how many were new.
func (f *Follower) ApplyRevocations(revs []fsm.Revocation) int {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	prev := f.cur.Load()
	if prev == nil {
		return 0
	}
	var fresh []fsm.Revocation
	for _, r := range revs {
		if _, ok := prev.Revoked(r.Kind, r.ID); !ok {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return 0
	}
	slices.SortFunc(fresh, func(a, b fsm.Revocation) int {
		return strings.Compare(trust.RevocationKey(a.Kind, a.ID), trust.RevocationKey(b.Kind, b.ID))
	})
	fresh = slices.CompactFunc(fresh, func(a, b fsm.Revocation) bool { return a.Kind == b.Kind && a.ID == b.ID })
	next, err := prev.Apply(trust.Delta{Network: f.cfg.Network, Since: prev.Index(), Index: prev.Index(), Put: trust.Records{Revocations: fresh}})
	if err != nil {
		f.log.Warn("revocations of a bulletin do not apply", "error", err)
		return 0
	}
	f.cur.Store(next)
	if f.cfg.OnChange != nil {
		f.cfg.OnChange(prev, next)
	}
	ch := make(chan struct{})
	close(*f.changed.Swap(&ch))
	return len(fresh)
}

// persistLoop writes the newest state to trust.json whenever it changed,
// at most once per PersistInterval (a burst of changes costs one write of
// the newest), until stop is closed; then once more if a change is not
// written yet.
func (f *Follower) persistLoop(stop <-chan struct{}) {
	defer f.store.close()
	pause := f.cfg.PersistInterval
	write := func() {
		f.persistMu.Lock()
		deltas, snap := f.pending, f.pendingSnap
		f.pending, f.pendingSnap = nil, false
		f.persistMu.Unlock()
		if err := f.store.write(f.cur.Load, deltas, snap); err != nil {
			// Try again later, less often while it keeps failing.
			pause = min(2*pause, maxPersistPause)
			f.log.Warn("cannot persist the trust state; a restart will start from an older one", "error", err, "retry_in", pause.String())
			select {
			case f.dirty <- struct{}{}:
			default:
			}
			return
		}
		pause = f.cfg.PersistInterval
		if f.store.index > f.persisted.Load() {
			f.persisted.Store(f.store.index)
			ch := make(chan struct{})
			close(*f.wrote.Swap(&ch))
		}
	}
	for {
		select {
		case <-stop:
			write()
			return
		case <-f.dirty:
			write()
		}
		// Changes until the interval is over are written together.
		t := time.NewTimer(pause)
		select {
		case <-stop:
			t.Stop()
			write()
			return
		case <-t.C:
		}
	}
}

// maxPersistPause bounds the pause between attempts to write the trust
// state while writing fails.
const maxPersistPause = time.Minute

// maxPendingDeltas is how many applied deltas wait for the persist loop
// before it writes a snapshot instead.
const maxPendingDeltas = 1024

// trustFile is the content of trust.json: version 2 holds a full
// document (a trust.Delta with Reset); version 1, the document of older
// agents, is read too.
type trustFile struct {
	Version int         `json:"version"`
	Trust   trust.Delta `json:"trust"`
}

// trustFileV1 is trust.json as agents before incremental sync wrote it.
type trustFileV1 struct {
	Version int `json:"version"`
	Trust   struct {
		Index       uint64            `json:"index"`
		Network     string            `json:"network"`
		Anchors     []fsm.TrustAnchor `json:"anchors"`
		Revocations []fsm.Revocation  `json:"revocations"`
		JWKS        []fsm.JWK         `json:"jwks"`
		Nodes       []fsm.Node        `json:"nodes"`
		Servers     []fsm.Server      `json:"servers"`
	} `json:"trust"`
}

// WriteTrustFile persists doc (a full document) to trust.json atomically,
// as the snapshot of an empty journal.
func WriteTrustFile(dir string, doc trust.Delta) error {
	if !doc.Reset {
		return errors.New("agent: trust.json holds full documents only")
	}
	st, err := trust.NewState(doc)
	if err != nil {
		return fmt.Errorf("agent: trust document: %w", err)
	}
	return newTrustStore(dir, 0, true).snapshot(st)
}

// ReadTrustFile reads the persisted trust state back as a full document:
// trust.json and the journal's changes after it. An absent trust.json
// wraps fs.ErrNotExist; a damaged one, of another version or of another
// network than network wraps ErrTrustFile. A journal damaged after some
// lines gives the state up to them.
func ReadTrustFile(dir, network string) (trust.Delta, error) {
	st, _, _, err := loadTrust(dir, network)
	if err != nil {
		return trust.Delta{}, err
	}
	return st.Document(), nil
}

// loadTrust reads trust.json and replays the journal. jerr says why the
// replay stopped before the journal's end (it is not an error of the
// load: the state is that of the lines before).
func loadTrust(dir, network string) (st *trust.State, replayed int, jerr, err error) {
	doc, err := readSnapshot(dir, network)
	if err != nil {
		return nil, 0, nil, err
	}
	if st, err = trust.NewState(doc); err != nil {
		return nil, 0, nil, fmt.Errorf("%w: %w", ErrTrustFile, err)
	}
	b, err := readJournal(dir)
	if err != nil {
		return st, 0, err, nil
	}
	st, replayed, jerr = replayJournal(b, st)
	return st, replayed, jerr, nil
}

// readSnapshot reads trust.json alone.
func readSnapshot(dir, network string) (trust.Delta, error) {
	fh, err := os.Open(TrustPath(dir))
	if err != nil {
		return trust.Delta{}, fmt.Errorf("agent: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxTrustFile+1))
	if err != nil {
		return trust.Delta{}, fmt.Errorf("agent: %w", err)
	}
	return decodeTrustFile(b, network)
}

// decodeTrustFile strictly decodes the content of trust.json.
func decodeTrustFile(b []byte, network string) (trust.Delta, error) {
	if len(b) > maxTrustFile {
		return trust.Delta{}, fmt.Errorf("%w: larger than %d bytes", ErrTrustFile, maxTrustFile)
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return trust.Delta{}, fmt.Errorf("%w: %w", ErrTrustFile, err)
	}
	var doc trust.Delta
	switch head.Version {
	case 1:
		var tf trustFileV1
		if err := api.DecodeStrict(b, &tf); err != nil {
			return trust.Delta{}, fmt.Errorf("%w: %w", ErrTrustFile, err)
		}
		t := tf.Trust
		doc = trust.Delta{Network: t.Network, Index: t.Index, Reset: true, Put: trust.Records{Anchors: t.Anchors,
			Revocations: t.Revocations, JWKS: t.JWKS, Nodes: t.Nodes, Servers: t.Servers}}
	case 2:
		var tf trustFile
		if err := api.DecodeStrict(b, &tf); err != nil {
			return trust.Delta{}, fmt.Errorf("%w: %w", ErrTrustFile, err)
		}
		doc = tf.Trust
	default:
		return trust.Delta{}, fmt.Errorf("%w: version %d, want 1 or 2", ErrTrustFile, head.Version)
	}
	switch {
	case !doc.Reset:
		return trust.Delta{}, fmt.Errorf("%w: not a full document", ErrTrustFile)
	case doc.Network != network:
		return trust.Delta{}, fmt.Errorf("%w: of network %q, this node is of %q", ErrTrustFile, doc.Network, network)
	case doc.Index == 0:
		return trust.Delta{}, fmt.Errorf("%w: no state index", ErrTrustFile)
	}
	if _, err := trust.NewState(doc); err != nil {
		return trust.Delta{}, fmt.Errorf("%w: %w", ErrTrustFile, err)
	}
	return doc, nil
}

// revokedRefusal reports whether err is a root server refusing this node
// as revoked.
func revokedRefusal(err error) bool { return errors.Is(err, api.ErrRevoked) }
