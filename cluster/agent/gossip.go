package agent

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session/gossip"
)

// The agent gossips (package session/gossip) when it is given
// GossipAddr: its node graph holds the authenticated members of the
// accepted networks, `--peer NODEID` dials the address a member's proof
// names, a member the graph finds dead has its session ended, and
// revocation bulletins signed by the roots are applied at once, ahead of
// the trust sync, then passed on. The gossip key comes from the roots
// over mutual TLS with the node certificate (GET /v1/gossip/keys, a
// blocking query the agent keeps open), and is kept in gossip.keys (0600)
// so that a restart without a root still gossips.

// fileGossipKeys holds the gossip keyring.
const fileGossipKeys = "gossip.keys"

// GossipKeysPath is where the agent of the node in dir keeps the gossip
// keyring.
func GossipKeysPath(dir string) string { return filepath.Join(dir, fileGossipKeys) }

// ErrKeyringFile: gossip.keys is damaged (it is fetched anew).
var ErrKeyringFile = errors.New("agent: gossip.keys is damaged")

// maxKeyringFile bounds gossip.keys.
const maxKeyringFile = 16 << 10

// keyring is the gossip keyring the agent holds.
type keyring struct {
	path string

	mu      sync.Mutex
	cur     api.GossipKeyring
	changed chan struct{} // closed and replaced at each new keyring
}

func newKeyring(dir, network string) (*keyring, error) {
	k := &keyring{path: GossipKeysPath(dir), changed: make(chan struct{})}
	b, err := os.ReadFile(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return k, fmt.Errorf("%w: %w", ErrKeyringFile, err) // an empty keyring: the roots send it again
	}
	kr, err := decodeKeyring(b, network)
	if err != nil {
		return k, err // the caller logs it; the roots send it again
	}
	k.cur = kr
	return k, nil
}

// decodeKeyring reads a keyring (gossip.keys, or a root's answer) and
// checks it: of this network, one to fsm.MaxGossipKeys keys of 32 bytes,
// the primary first.
func decodeKeyring(b []byte, network string) (api.GossipKeyring, error) {
	if len(b) > maxKeyringFile {
		return api.GossipKeyring{}, fmt.Errorf("%w: larger than %d bytes", ErrKeyringFile, maxKeyringFile)
	}
	var kr api.GossipKeyring
	if err := api.DecodeStrict(b, &kr); err != nil {
		return api.GossipKeyring{}, fmt.Errorf("%w: %w", ErrKeyringFile, err)
	}
	if err := checkKeyring(kr, network); err != nil {
		return api.GossipKeyring{}, err
	}
	return kr, nil
}

func checkKeyring(kr api.GossipKeyring, network string) error {
	if kr.Network != network {
		return fmt.Errorf("%w: of network %q, this node is of %q", ErrKeyringFile, kr.Network, network)
	}
	if len(kr.Keys) == 0 || len(kr.Keys) > fsm.MaxGossipKeys || kr.Keys[0].State != fsm.GossipKeyPrimary {
		return fmt.Errorf("%w: %d keys, the first %q; want 1 to %d, the primary first", ErrKeyringFile, len(kr.Keys), firstState(kr), fsm.MaxGossipKeys)
	}
	for _, g := range kr.Keys {
		if len(g.Key) != 32 {
			return fmt.Errorf("%w: key %s is %d bytes, not 32", ErrKeyringFile, g.ID, len(g.Key))
		}
	}
	return nil
}

func firstState(kr api.GossipKeyring) string {
	if len(kr.Keys) == 0 {
		return ""
	}
	return kr.Keys[0].State
}

// get is the keyring held now (Index 0: none yet).
func (k *keyring) get() (api.GossipKeyring, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur, k.changed
}

// raw is the keys for memberlist, the primary first.
func raw(kr api.GossipKeyring) [][]byte {
	out := make([][]byte, 0, len(kr.Keys))
	for _, g := range kr.Keys {
		out = append(out, g.Key)
	}
	return out
}

// set takes a newer keyring, writes it to gossip.keys (0600) first.
func (k *keyring) set(kr api.GossipKeyring, network string) (bool, error) {
	if err := checkKeyring(kr, network); err != nil {
		return false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.cur.Keys) > 0 && kr.Index <= k.cur.Index {
		return false, nil
	}
	b, err := json.Marshal(kr)
	if err != nil {
		return false, err
	}
	if err := writeFile(k.path, b, 0o600); err != nil {
		return false, err
	}
	k.cur = kr
	close(k.changed)
	k.changed = make(chan struct{})
	return true, nil
}

// followKeyring keeps the keyring in step with the roots' (a blocking
// query over mutual TLS), until ctx ends. A node the roots refuse
// (revoked) gets no new key; the agent stops anyway.
func (a *Agent) followKeyring(ctx context.Context) error {
	wait := a.cfg.TrustWait
	if wait == 0 {
		wait = 30 * time.Second
	}
	caPEM := ca.EncodeCertsPEM(a.roots...)
	sources := map[string]*nodeSource{}
	defer func() {
		for _, s := range sources {
			s.Close()
		}
	}()
	failures := 0
	var ask uint64
	for i := 0; ctx.Err() == nil; {
		servers := a.keyringServers()
		server := servers[i%len(servers)]
		src := sources[server]
		if src == nil {
			src = &nodeSource{server: server, caPEM: caPEM, creds: a.creds}
			sources[server] = src
		}
		cur, _ := a.gossipKeys.get()
		var kr api.GossipKeyring
		cl, err := src.client()
		if err == nil {
			kr, err = cl.GossipKeys(ctx, max(cur.Index, ask), wait)
		}
		if err == nil && len(kr.Keys) == 0 {
			ask = kr.Index // a network of an older release: its leader makes the first key soon
			continue
		}
		if err == nil {
			failures = 0
			changed, serr := a.gossipKeys.set(kr, a.state.Network)
			if serr != nil {
				a.log.Error("the gossip keyring a root answered is refused", "server", server, "error", serr)
				err = serr
			} else if changed {
				a.log.Info("gossip keyring updated", "index", kr.Index, "primary", kr.Keys[0].ID, "keys", len(kr.Keys), "server", server)
			}
			if err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if revokedRefusal(err) {
			a.log.Error("the roots refuse this node the gossip keyring", "error", err)
			select {
			case <-ctx.Done():
			case <-a.revokedCh:
			}
			return nil
		}
		failures++
		i++
		d := min(a.cfg.MinBackoff<<min(failures, 16), a.cfg.MaxBackoff)
		a.log.Debug("gossip keyring query failed", "server", server, "error", err, "retry_in", d.String())
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.After(d):
		}
	}
	return nil
}

// keyringServers are the root servers to ask for the keyring: those the
// trust state lists, else node.json's and the configured ones.
func (a *Agent) keyringServers() []string {
	if a.cfg.PinServers {
		return a.rootServers()
	}
	var out []string
	if st := a.follower.Current(); st != nil {
		for _, s := range st.Servers() {
			if s.Status != fsm.ServerRemoved && s.APIAddr != "" {
				out = append(out, s.APIAddr)
			}
		}
	}
	if len(out) == 0 {
		out = a.rootServers()
	}
	return out
}

// gossipWanted: the agent gossips.
func (a *Agent) gossipWanted() bool { return a.cfg.GossipAddr != "" || a.cfg.GossipTransport != nil }

// runGossip runs the member once the agent holds a keyring and a trust
// state, and gives it each new keyring.
func (a *Agent) runGossip(ctx context.Context) error {
	kr, changed := a.gossipKeys.get()
	for len(kr.Keys) == 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		kr, changed = a.gossipKeys.get()
	}
	if err := a.follower.WaitFor(ctx, func(v trust.View) bool { return v.Index() > 0 }); err != nil {
		return nil
	}
	g, err := gossip.New(gossip.Config{Node: a.state.NodeID, Network: a.state.Network,
		Bind: a.cfg.GossipAddr, Advertise: a.cfg.GossipAdvertise, Transport: a.cfg.GossipTransport,
		Keys: raw(kr), Join: a.cfg.GossipJoin, Peer: a.peerAdvertise(),
		Signer: a.gossipSigner, Verifier: a.verifier, View: a.view, Applied: a.follower.Index,
		OnBulletin: a.applyBulletin, OnMember: a.memberChanged, Tune: a.cfg.GossipTune,
		Clock: a.cfg.Clock, Logger: a.log.Named("gossip")})
	if err != nil {
		return err
	}
	a.gossip.Store(g)
	a.log.Info("gossiping", "addr", a.cfg.GossipAddr, "join", a.cfg.GossipJoin, "keyring", kr.Index)
	go func() {
		select {
		case <-g.Ready():
			close(a.gossipUp)
		case <-ctx.Done():
		}
	}()
	done := make(chan struct{})
	defer close(done)
	go func(changed <-chan struct{}) {
		gen := uint64(0)
		if nc, err := a.creds.current(); err == nil {
			gen = nc.gen
		}
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-changed:
				var next api.GossipKeyring
				next, changed = a.gossipKeys.get()
				if err := g.SetKeys(raw(next)); err != nil {
					a.log.Error("cannot take the new gossip keyring", "error", err)
				}
			case <-tick.C:
				// A renewal or rotation: sign the proof with the new key.
				if nc, err := a.creds.current(); err == nil && nc.gen != gen {
					gen = nc.gen
					g.Refresh()
				}
			}
		}
	}(changed)
	return g.Run(ctx)
}

// peerAdvertise is the peering address the membership proof names: the
// listener's, with the gossip host when it listens on every address.
func (a *Agent) peerAdvertise() string {
	addr := a.SessionAddr()
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		gh := a.cfg.GossipAdvertise
		if gh == "" {
			gh = a.cfg.GossipAddr
		}
		if h, _, err := net.SplitHostPort(gh); err == nil && h != "" {
			return net.JoinHostPort(h, port)
		}
		return ""
	}
	return addr
}

// gossipSigner is the node's current key for its membership proof.
func (a *Agent) gossipSigner() (gossip.Signer, error) {
	nc, err := a.creds.current()
	if err != nil {
		return gossip.Signer{}, err
	}
	k, ok := nc.tls.PrivateKey.(crypto.Signer)
	if !ok {
		return gossip.Signer{}, errors.New("agent: the node key cannot sign")
	}
	return gossip.Signer{Node: a.state.NodeID, KID: nc.minter.KID(), Key: k}, nil
}

// applyBulletin applies a verified bulletin's revocations at once: the
// sessions, routes and tokens they touch go before the trust sync
// brings the same revocations (which confirms them).
func (a *Agent) applyBulletin(b gossip.Bulletin) {
	revs := make([]fsm.Revocation, 0, len(b.Revocations))
	for _, r := range b.Revocations {
		revs = append(revs, fsm.Revocation{Kind: fsm.RevocationKind(r.Kind), ID: r.ID, Time: time.Unix(r.Time, 0).UTC(), Reason: "bulletin"})
	}
	if n := a.follower.ApplyRevocations(revs); n > 0 {
		a.log.Info("revocations applied from a gossip bulletin", "revocations", n, "from", b.From, "to", b.To)
	}
}

// publishBulletins passes on the bulletins of a trust answer to the
// members that cannot reach a root.
func (a *Agent) publishBulletins(bulletins [][]byte) {
	g := a.gossip.Load()
	if g == nil {
		return
	}
	for _, enc := range bulletins {
		b, err := gossip.DecodeBulletin(enc)
		if err != nil {
			a.log.Warn("a root sent a bulletin that does not decode", "error", err)
			continue
		}
		if err := g.Publish(b); err != nil {
			a.log.Warn("cannot gossip a bulletin", "error", err)
		}
	}
}

// memberChanged ends the session of a member the graph finds dead.
func (a *Agent) memberChanged(m gossip.Member) {
	if m.State != gossip.StateDead {
		return
	}
	a.log.Info("a member failed", "member", m.Node, "addr", m.Addr)
	if s := a.speaker.Load(); s != nil {
		s.PeerFailed(m.Node)
	}
}

// resolvePeer is where a peer configured by node id alone is dialled.
func (a *Agent) resolvePeer(id string) (string, bool) {
	g := a.gossip.Load()
	if g == nil {
		return "", false
	}
	return g.PeerAddr(id)
}

// GossipReady is closed once the agent gossips (Gossip().Advertised()
// says where); never without gossip.
func (a *Agent) GossipReady() <-chan struct{} { return a.gossipUp }

// Gossip is the agent's member once it gossips, nil before or without.
func (a *Agent) Gossip() *gossip.Gossip { return a.gossip.Load() }

// Members is the node graph, sorted by node id (nil without gossip).
func (a *Agent) Members() []gossip.Member {
	g := a.gossip.Load()
	if g == nil {
		return nil
	}
	return g.Members()
}

// writeGossipMetrics writes the gossip counters in the Prometheus text
// format.
func (a *Agent) writeGossipMetrics(w io.Writer) {
	g := a.gossip.Load()
	if g == nil {
		return
	}
	counts := g.Counts()
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	fmt.Fprintf(w, "# HELP keymesh_gossip_events_total Gossip events: bulletins applied, bulletins and members dropped, by reason.\n# TYPE keymesh_gossip_events_total counter\n")
	for _, r := range reasons {
		fmt.Fprintf(w, "keymesh_gossip_events_total{event=%q} %d\n", r, counts[r])
	}
	states := map[gossip.MemberState]int{}
	for _, m := range g.Members() {
		states[m.State]++
	}
	fmt.Fprintf(w, "# HELP keymesh_gossip_members Members of the node graph, by state.\n# TYPE keymesh_gossip_members gauge\n")
	for _, s := range []gossip.MemberState{gossip.StateAlive, gossip.StateSuspect, gossip.StateDead, gossip.StateLeft} {
		fmt.Fprintf(w, "keymesh_gossip_members{state=%q} %d\n", s, states[s])
	}
	kr, _ := a.gossipKeys.get()
	fmt.Fprintf(w, "# HELP keymesh_gossip_keyring_index Version (CA record index) of the gossip keyring held.\n# TYPE keymesh_gossip_keyring_index gauge\nkeymesh_gossip_keyring_index %d\n", kr.Index)
}
