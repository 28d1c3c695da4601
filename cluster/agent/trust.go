package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/fsm"
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
	// wait with the unchanged document.
	Trust(ctx context.Context, index uint64, wait time.Duration) (cluster.Trust, error)
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
	// api_addr of every root server in each followed document is added.
	Servers []string
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
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// After returns a channel that receives once d has passed; nil means
	// time.After. Tests drive the backoff with a fake.
	After func(d time.Duration) <-chan time.Time
	// Logger receives structured logs; nil discards them.
	Logger hclog.Logger
	// OnChange, if set, is called after each newer document is in place,
	// with the previous one (nil at first) and the new one. Calls are
	// serialised and come before the document is persisted.
	OnChange func(prev, cur *cluster.TrustIndex)
	// OnRevoked, if set, is called when a root server refuses this node
	// because its node, certificate (or an issuer above it) or key is
	// revoked: a revoked node cannot read the trust state that revokes
	// it, the refusal is how it learns.
	OnRevoked func(err error)
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
	case c.Wait < 0, c.MinBackoff < 0, c.MaxBackoff < 0, c.RefreshTimeout < 0:
		return fmt.Errorf("agent: trust follower durations must not be negative (wait %s, backoff %s..%s, refresh %s)",
			c.Wait, c.MinBackoff, c.MaxBackoff, c.RefreshTimeout)
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
}

// Follower follows the trust state of the root servers with blocking
// queries on /v1/trust, resuming from its last index, and fails over to
// the other root servers when its server is unreachable. Each newer
// document is swapped in (State), handed to OnChange, and persisted to
// trust.json, from which a restarted follower starts at once, offline.
//
// A Follower is also an identity.Refresher (through the agent's key
// source): Refresh fetches the current document at once.
type Follower struct {
	cfg FollowerConfig
	log hclog.Logger

	cur   atomic.Pointer[cluster.TrustIndex]
	empty *cluster.TrustIndex

	applyMu sync.Mutex // serialises apply: swap, OnChange, persist

	mu          sync.Mutex // guards the fields below
	servers     []string
	server      string // the one followed now
	sources     map[string]TrustSource
	lastContact time.Time
	failures    int
	lastErr     string

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
	f := &Follower{cfg: cfg, log: cfg.Logger, sources: map[string]TrustSource{},
		empty: cluster.NewTrustIndex(cluster.Trust{Network: cfg.Network})}
	f.setServers(nil)
	doc, err := ReadTrustFile(cfg.DataDir, cfg.Network)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		f.log.Error("ignoring the persisted trust document; fetching it anew", "path", TrustPath(cfg.DataDir), "error", err)
	default:
		x := cluster.NewTrustIndex(doc)
		f.cur.Store(x)
		f.setServers(doc.Servers)
		f.log.Info("trust state loaded from the data directory", "index", doc.Index, "keys", len(doc.JWKS),
			"revocations", len(doc.Revocations))
	}
	return f, nil
}

// Current is the current trust document, nil before the first.
func (f *Follower) Current() *cluster.TrustIndex { return f.cur.Load() }

// State is the current trust state (an empty one before the first
// document), for cluster.TrustKeys.
func (f *Follower) State() cluster.TrustState {
	if x := f.cur.Load(); x != nil {
		return x
	}
	return f.empty
}

// Index is the state index of the current document, 0 before the first.
func (f *Follower) Index() uint64 {
	if x := f.cur.Load(); x != nil {
		return x.Doc().Index
	}
	return 0
}

// Status says which server is followed, how far and how well.
func (f *Follower) Status() FollowerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FollowerStatus{Index: f.Index(), Server: f.server, Servers: slices.Clone(f.servers),
		LastContact: f.lastContact, Failures: f.failures, LastError: f.lastErr}
}

// setServers makes the server list: the configured servers, then the
// api_addr of every root server of the document not removed. The server
// followed now stays if it is still listed.
func (f *Follower) setServers(docServers []fsm.Server) {
	list := slices.Clone(f.cfg.Servers)
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
	f.log.Info("following the trust state", "servers", f.Status().Servers, "index", f.Index())
	for ctx.Err() == nil {
		server, src, err := f.source()
		var progressed bool
		start := f.cfg.Clock()
		if err == nil {
			var doc cluster.Trust
			before := f.Index()
			doc, err = src.Trust(ctx, before, f.cfg.Wait)
			if err == nil {
				err = f.apply(doc, server)
				progressed = f.Index() > before
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			f.answered()
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
		if failures%n != 0 {
			f.log.Warn("root server failed; trying the next", "server", server, "failures", failures, "error", err)
			continue
		}
		d := f.backoff(failures / n)
		f.log.Warn("no root server answers; backing off", "server", server, "failures", failures, "retry_in", d.String(), "error", err)
		if !f.pause(ctx, d) {
			return nil
		}
	}
	return nil
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

// Refresh asks the root servers for the current document at once (no
// blocking wait), starting with the one followed now, within
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
		doc, terr := src.Trust(ctx, 0, 0)
		if terr == nil {
			return f.apply(doc, server)
		}
		err = terr
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("agent: refreshing the trust state: %w", err)
}

// apply puts doc in place if it is newer than the current document.
func (f *Follower) apply(doc cluster.Trust, server string) error {
	if doc.Network != f.cfg.Network {
		return fmt.Errorf("%w: %s answered for %q, this node is of %q", ErrOtherNetwork, server, doc.Network, f.cfg.Network)
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	prev := f.cur.Load()
	if prev != nil && doc.Index <= prev.Doc().Index {
		return nil
	}
	x := cluster.NewTrustIndex(doc)
	f.cur.Store(x)
	f.setServers(doc.Servers)
	if f.cfg.OnChange != nil {
		f.cfg.OnChange(prev, x)
	}
	f.log.Debug("trust state updated", "index", doc.Index, "server", server)
	if err := WriteTrustFile(f.cfg.DataDir, doc); err != nil {
		f.log.Warn("cannot persist the trust state; a restart will start from an older one", "error", err)
	}
	return nil
}

// trustFile is the content of trust.json.
type trustFile struct {
	Version int           `json:"version"`
	Trust   cluster.Trust `json:"trust"`
}

// WriteTrustFile persists doc to trust.json atomically.
func WriteTrustFile(dir string, doc cluster.Trust) error {
	b, err := json.Marshal(trustFile{Version: 1, Trust: doc})
	if err != nil {
		return fmt.Errorf("agent: encode trust document: %w", err)
	}
	return writeFile(TrustPath(dir), append(b, '\n'), 0o644)
}

// ReadTrustFile reads trust.json back. An absent file wraps
// fs.ErrNotExist; a damaged one, of another version or of another network
// than network wraps ErrTrustFile.
func ReadTrustFile(dir, network string) (cluster.Trust, error) {
	fh, err := os.Open(TrustPath(dir))
	if err != nil {
		return cluster.Trust{}, fmt.Errorf("agent: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxTrustFile+1))
	if err != nil {
		return cluster.Trust{}, fmt.Errorf("agent: %w", err)
	}
	return decodeTrustFile(b, network)
}

// decodeTrustFile strictly decodes the content of trust.json.
func decodeTrustFile(b []byte, network string) (cluster.Trust, error) {
	if len(b) > maxTrustFile {
		return cluster.Trust{}, fmt.Errorf("%w: larger than %d bytes", ErrTrustFile, maxTrustFile)
	}
	var tf trustFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tf); err != nil {
		return cluster.Trust{}, fmt.Errorf("%w: %w", ErrTrustFile, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return cluster.Trust{}, fmt.Errorf("%w: data after the document", ErrTrustFile)
	}
	switch {
	case tf.Version != 1:
		return cluster.Trust{}, fmt.Errorf("%w: version %d, want 1", ErrTrustFile, tf.Version)
	case tf.Trust.Network != network:
		return cluster.Trust{}, fmt.Errorf("%w: of network %q, this node is of %q", ErrTrustFile, tf.Trust.Network, network)
	case tf.Trust.Index == 0:
		return cluster.Trust{}, fmt.Errorf("%w: no state index", ErrTrustFile)
	}
	return tf.Trust, nil
}

// revokedRefusal reports whether err is a root server refusing this node
// as revoked.
func revokedRefusal(err error) bool {
	var ae *cluster.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		return false
	}
	switch ae.Code {
	case cluster.CodeNodeRevoked, cluster.CodeCertRevoked, cluster.CodeKeyRevoked:
		return true
	}
	return false
}
