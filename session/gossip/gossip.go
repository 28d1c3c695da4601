package gossip

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// Config configures a member.
type Config struct {
	// Node and Network are this member's.
	Node, Network string
	// Bind is the host:port memberlist listens on (UDP and TCP); Advertise,
	// if set, the address others reach it at (and its proof names).
	Bind, Advertise string
	// Transport replaces the network (tests: memberlist.MockNetwork).
	Transport memberlist.Transport
	// Keys is the gossip keyring, the first the primary (AES-256: 32
	// bytes each). Required: gossip is always encrypted.
	Keys [][]byte
	// Peer is where this node takes peering sessions, if it does; its
	// proof carries it, so that others dial it by node id.
	Peer string
	// Join are members to join at start.
	Join []string
	// Signer is this node's current key (proofs).
	Signer func() (Signer, error)
	// Keys of other members' proofs are checked with Verifier against
	// View (the access list, revocations).
	Verifier KeySource
	View     func() trust.View
	// Applied is the last state index the node holds (its trust sync);
	// OnBulletin applies a verified bulletin at once.
	Applied    func() uint64
	OnBulletin func(Bulletin)
	// OnMember, if set, is told each change of a member's state (a
	// failed member: its sessions end).
	OnMember func(Member)
	// BulletinRate and BulletinBurst bound the bulletins taken from each
	// relaying member (default 2/s, burst 10); VerifyRate bounds the
	// signature checks of bulletins in all (default 200/s).
	BulletinRate, BulletinBurst, VerifyRate float64
	// Tune edits the memberlist configuration (DefaultLANConfig) before it
	// is used; tests shorten its timers.
	Tune func(*memberlist.Config)

	// checks, when set, is shared with other members in this process
	// (the scale simulation: each proof checked once, not once per member).
	checks *proofChecks
	// Clock is the time of proofs and freshness; nil is time.Now.
	Clock  func() time.Time
	Logger hclog.Logger
}

// MemberState is what the graph knows of a member.
type MemberState string

// Member states.
const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
	StateDead    MemberState = "dead"
	StateLeft    MemberState = "left"
	// StateRevoked: the trust state revokes the member's node since it
	// joined; it is out of the graph's use at once, and out of gossip
	// once the rotation of the gossip key its revocation starts is done.
	StateRevoked MemberState = "revoked"
)

// Member is a member of the node graph: authenticated, of an accepted
// network.
type Member struct {
	Node    string      `json:"node"`
	Network string      `json:"network"`
	Addr    string      `json:"addr"`
	Peer    string      `json:"peer_addr,omitempty"`
	State   MemberState `json:"state"`
	Since   time.Time   `json:"since"`
}

// Gossip is this node's membership and bulletin spreading.
type Gossip struct {
	cfg Config
	log hclog.Logger

	mlp   atomic.Pointer[memberlist.Memberlist]
	queue *memberlist.TransmitLimitedQueue // made by New, before memberlist runs
	ready chan struct{}

	mu       sync.Mutex
	members  map[string]*Member
	proof    []byte
	seen     map[[32]byte]time.Time // bulletins seen, by hash
	relays   map[string]*bucket     // bulletins by relaying member
	verify   bucket                 // signature checks in all
	counts   map[string]uint64      // dropped, by reason; applied
	recent   [][]byte               // the last bulletins taken, for push-pull
	checks   *proofChecks           // proofs checked and the newest of each node
	accView  trust.View             // the view (and index) accList is of
	accIndex uint64
	accList  []string
	crashed  bool
	keyring  *memberlist.Keyring
	// suspicion bounds how long a member stays suspect; suspectUntil is
	// when each suspicion expires.
	suspicion    time.Duration
	suspectUntil map[string]time.Time
}

// markSuspect records that this member's probe of name failed.
func (g *Gossip) markSuspect(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[name]
	if m == nil || m.State != StateAlive {
		return
	}
	now := g.cfg.Clock()
	m.State, m.Since = StateSuspect, now
	g.suspectUntil[name] = now.Add(g.suspicion)
}

// crash stops memberlist without leaving, as a killed process would (for
// tests of failure detection).
func (g *Gossip) crash() {
	g.mu.Lock()
	g.crashed = true
	g.mu.Unlock()
	if ml := g.mlp.Load(); ml != nil {
		ml.Shutdown()
	}
}

// Message types on the wire (memberlist user messages).
const msgBulletin byte = 'B'

// maxGossipMessage keeps a relayed bulletin within one gossip packet
// (memberlist's UDP buffer is 1,400 bytes, with its own overhead).
const maxGossipMessage = 1200

// ErrTooLarge: a bulletin too large to gossip.
var ErrTooLarge = errors.New("gossip: bulletin too large")

// envelope is a bulletin as a member relays it.
type envelope struct {
	Relayer  string `cbor:"1,keyasint"`
	Bulletin []byte `cbor:"2,keyasint"`
}

// New checks cfg; Run starts the member.
func New(cfg Config) (*Gossip, error) {
	if !validID(cfg.Node) || cfg.Network == "" {
		return nil, errors.New("gossip: a member needs its node id and network")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("gossip: a member needs the gossip key (gossip is always encrypted)")
	}
	for _, k := range cfg.Keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("gossip: a gossip key is 32 bytes (AES-256), not %d", len(k))
		}
	}
	if cfg.Signer == nil || cfg.Verifier == nil || cfg.View == nil || cfg.Applied == nil || cfg.OnBulletin == nil {
		return nil, errors.New("gossip: a member needs a signer, a verifier, a trust view, Applied and OnBulletin")
	}
	if cfg.Transport == nil && cfg.Bind == "" {
		return nil, errors.New("gossip: a member needs an address to bind (--gossip-addr)")
	}
	if cfg.BulletinRate == 0 {
		cfg.BulletinRate = 2
	}
	if cfg.BulletinBurst == 0 {
		cfg.BulletinBurst = 10
	}
	if cfg.VerifyRate == 0 {
		cfg.VerifyRate = 200
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	g := &Gossip{cfg: cfg, log: cfg.Logger, ready: make(chan struct{}), members: map[string]*Member{},
		seen: map[[32]byte]time.Time{}, checks: cfg.checks, relays: map[string]*bucket{}, counts: map[string]uint64{}, suspectUntil: map[string]time.Time{},
		verify: bucket{rate: cfg.VerifyRate, burst: cfg.VerifyRate, tokens: cfg.VerifyRate}}
	if g.checks == nil {
		g.checks = &proofChecks{checked: map[[32]byte]checkedProof{}, times: map[string]int64{}}
	}
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int {
		if ml := g.mlp.Load(); ml != nil {
			return ml.NumMembers()
		}
		return 1
	}, RetransmitMult: 4}
	return g, nil
}

// Ready is closed once Run has started memberlist and tried to join.
func (g *Gossip) Ready() <-chan struct{} { return g.ready }

// Run starts memberlist, joins, gossips until ctx ends, then leaves.
func (g *Gossip) Run(ctx context.Context) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.cfg.Node
	mc.Label = g.cfg.Network // two networks never merge
	g.mu.Lock()
	kr, err := memberlist.NewKeyring(g.cfg.Keys, g.cfg.Keys[0])
	if err == nil {
		g.keyring = kr
	}
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("gossip: keyring: %w", err)
	}
	mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = kr, true, true
	mc.Logger = log.New(hclogWriter{l: g.log.Named("memberlist"), suspect: g.markSuspect}, "", 0)
	if g.cfg.Transport != nil {
		mc.Transport = g.cfg.Transport
	} else {
		// The transport is made here so that port 0 takes a free port
		// the proof can name.
		host, port, err := splitHostPort(g.cfg.Bind)
		if err != nil {
			return err
		}
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: mc.Logger})
		if err != nil {
			return fmt.Errorf("gossip: listen on %s: %w", g.cfg.Bind, err)
		}
		mc.Transport, mc.BindAddr, mc.BindPort = nt, host, nt.GetAutoBindPort()
		mc.AdvertiseAddr, mc.AdvertisePort = host, mc.BindPort
		if g.cfg.Advertise != "" {
			if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(g.cfg.Advertise); err != nil {
				nt.Shutdown()
				return err
			}
		}
		if a, err := netip.ParseAddr(mc.AdvertiseAddr); err != nil || a.IsUnspecified() {
			nt.Shutdown()
			return fmt.Errorf("gossip: advertise an IP address others reach (--gossip-addr %s binds all addresses; set --gossip-advertise)", g.cfg.Bind)
		}
	}
	mc.Delegate, mc.Alive, mc.Merge, mc.Events = delegate{g}, delegate{g}, delegate{g}, delegate{g}
	if g.cfg.Tune != nil {
		g.cfg.Tune(mc)
	}
	if err := g.makeProof(mc); err != nil {
		mc.Transport.Shutdown()
		return err
	}
	g.queue.RetransmitMult = mc.RetransmitMult
	// memberlist's longest suspicion (suspicionTimeout times
	// SuspicionMaxTimeoutMult) at a large graph, and a probe more.
	g.mu.Lock()
	g.suspicion = time.Duration(mc.SuspicionMult*mc.SuspicionMaxTimeoutMult)*mc.ProbeInterval*4 + mc.ProbeInterval
	g.mu.Unlock()
	ml, err := memberlist.Create(mc)
	if err != nil {
		mc.Transport.Shutdown()
		return fmt.Errorf("gossip: %w", err)
	}
	g.mlp.Store(ml)
	joined := len(g.cfg.Join) == 0
	retry := time.Duration(0) // join at once, then back off
	if !joined {
		if n, err := ml.Join(g.cfg.Join); err != nil || n == 0 {
			g.log.Warn("joining the gossip failed; retrying", "joined", n, "error", err)
			retry = time.Second
		} else {
			joined = true
		}
	}
	close(g.ready)
	t := time.NewTicker(MaxProofAge / 2)
	defer t.Stop()
	var retryC <-chan time.Time
	if !joined {
		retryC = time.After(retry)
	}
	for {
		select {
		case <-retryC:
			// Until a join succeeds (the members named may start later):
			// a member alone hears of no one.
			retryC = nil
			if ml.NumMembers() > 1 {
				continue // someone joined this member meanwhile
			}
			if n, err := ml.Join(g.cfg.Join); err != nil || n == 0 {
				retry = min(retry*2, 30*time.Second)
				g.log.Debug("joining the gossip failed; retrying", "joined", n, "error", err, "retry_in", retry.String())
				retryC = time.After(retry)
			} else {
				g.log.Info("joined the gossip", "joined", n)
			}
		case <-ctx.Done():
			g.mu.Lock()
			crashed := g.crashed
			g.mu.Unlock()
			if crashed {
				return nil
			}
			ml.Leave(time.Second)
			return ml.Shutdown()
		case <-t.C:
			g.Refresh()
		}
	}
}

// Refresh signs this member's proof again (a new key, a new time) and
// tells the others.
func (g *Gossip) Refresh() {
	ml := g.mlp.Load()
	if ml == nil {
		return
	}
	addr := g.advertised()
	if err := g.sign(addr); err != nil {
		g.log.Warn("cannot sign the membership proof", "error", err)
		return
	}
	if err := ml.UpdateNode(5 * time.Second); err != nil {
		g.log.Warn("cannot gossip the new membership proof", "error", err)
	}
}

// Advertised is where this member gossips (once Ready).
func (g *Gossip) Advertised() string { return g.advertised() }

func (g *Gossip) advertised() string {
	ml := g.mlp.Load()
	if ml == nil {
		return ""
	}
	n := ml.LocalNode()
	ip, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(ip.Unmap(), n.Port).String()
}

// makeProof signs the first proof, at the address memberlist will
// advertise.
func (g *Gossip) makeProof(mc *memberlist.Config) error {
	ip, port, err := mc.Transport.FinalAdvertiseAddr(mc.AdvertiseAddr, mc.AdvertisePort)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	a, _ := netip.AddrFromSlice(ip)
	return g.sign(netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
}

func (g *Gossip) sign(addr string) error {
	s, err := g.cfg.Signer()
	if err != nil {
		return err
	}
	p, err := NewProof(s, g.cfg.Network, addr, g.cfg.Peer, g.cfg.Clock())
	if err != nil {
		return err
	}
	b, err := p.Encode()
	if err != nil {
		return err
	}
	if len(b) > MaxProofSize {
		return fmt.Errorf("gossip: a proof of %d bytes, memberlist takes %d", len(b), MaxProofSize)
	}
	g.mu.Lock()
	g.proof = b
	g.mu.Unlock()
	return nil
}

// Members is the node graph: authenticated members, alive, suspect or
// gone, sorted by node id.
func (g *Gossip) Members() []Member {
	listed := map[string]bool{}
	if ml := g.mlp.Load(); ml != nil {
		for _, n := range ml.Members() {
			listed[n.Name] = true
		}
	}
	view := g.cfg.View()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock()
	out := make([]Member, 0, len(g.members))
	for name, m := range g.members {
		// A suspicion that outlived memberlist's longest suspicion
		// timeout without the member dying was refuted.
		if m.State == StateSuspect && listed[name] && now.After(g.suspectUntil[name]) {
			m.State, m.Since = StateAlive, now
		}
		if m.State != StateRevoked && m.Network == g.cfg.Network && nodeRevoked(view, name) {
			m.State, m.Since = StateRevoked, now
		}
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Addr is where member node gossips, if the graph holds it alive.
func (g *Gossip) Addr(node string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[node]
	if m == nil || m.State == StateDead || m.State == StateLeft || m.State == StateRevoked {
		return "", false
	}
	return m.Addr, true
}

// nodeRevoked: view revokes node of this network (or holds it inactive).
func nodeRevoked(view trust.View, node string) bool {
	if _, ok := view.Revoked(fsm.RevocationNode, node); ok {
		return true
	}
	n, ok := view.Node(node)
	return ok && n.Status != fsm.NodeActive
}

// Publish spreads b (signed by a root's issuing key) to the members.
func (g *Gossip) Publish(b Bulletin) error {
	enc, err := b.Encode()
	if err != nil {
		return err
	}
	h := bulletinID(enc)
	g.mu.Lock()
	g.seen[h] = g.cfg.Clock()
	g.remember(enc)
	g.mu.Unlock()
	return g.relay(enc, h)
}

func (g *Gossip) relay(bulletin []byte, h [32]byte) error {
	msg, err := RelayMessage(g.cfg.Node, bulletin)
	if err != nil {
		return err
	}
	g.queue.QueueBroadcast(broadcast{msg: msg, name: fmt.Sprintf("%x", h[:8])})
	return nil
}

// RelayMessage is the gossip user message by which relayer passes on an
// encoded bulletin (what memberlist's NotifyMsg receives).
func RelayMessage(relayer string, bulletin []byte) ([]byte, error) {
	msg, err := encMode.Marshal(envelope{Relayer: relayer, Bulletin: bulletin})
	if err != nil {
		return nil, err
	}
	if len(msg)+1 > maxGossipMessage {
		return nil, fmt.Errorf("%w: %d bytes, gossip carries %d: sign fewer revocations a bulletin", ErrTooLarge, len(msg)+1, maxGossipMessage)
	}
	return append([]byte{msgBulletin}, msg...), nil
}

// Counts are the bulletins applied and dropped by reason, for metrics.
func (g *Gossip) Counts() map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]uint64, len(g.counts))
	for k, v := range g.counts {
		out[k] = v
	}
	return out
}

func (g *Gossip) count(reason string) {
	g.mu.Lock()
	g.counts[reason]++
	g.mu.Unlock()
}

// receive takes a user message: a relayed bulletin. What does not verify
// is dropped silently and counted.
func (g *Gossip) receive(msg []byte) {
	if len(msg) < 2 || msg[0] != msgBulletin || len(msg) > MaxBulletinSize+256 {
		g.count("malformed")
		return
	}
	var env envelope
	if err := decodeCanonical(msg[1:], &env); err != nil || !validID(env.Relayer) {
		g.count("malformed")
		return
	}
	g.take(env.Bulletin, env.Relayer)
}

// maxRecent bounds the bulletins a member keeps for push-pull.
const maxRecent = 16

// take verifies and applies a bulletin relayed by relayer (or brought by
// push-pull), once; what does not verify is dropped silently, counted.
func (g *Gossip) take(bulletin []byte, relayer string) {
	now := g.cfg.Clock()
	h := bulletinID(bulletin)
	g.mu.Lock()
	if _, dup := g.seen[h]; dup {
		g.mu.Unlock()
		g.count("duplicate")
		return
	}
	g.mu.Unlock()
	// What costs nothing is checked before the rate limits are charged:
	// junk, other networks, replays and stale bulletins use up no one's
	// allowance.
	b, err := DecodeBulletin(bulletin)
	if err != nil {
		g.count("malformed")
		return
	}
	if err := b.precheck(g.cfg.Network, g.cfg.Applied(), now); err != nil {
		g.count(dropReason(err))
		return
	}
	g.mu.Lock()
	rb := g.relays[relayer]
	if rb == nil {
		if len(g.relays) >= 4096 {
			clear(g.relays)
		}
		rb = &bucket{rate: g.cfg.BulletinRate, burst: g.cfg.BulletinBurst, tokens: g.cfg.BulletinBurst, at: now}
		if relayer == "push-pull" {
			rb.rate, rb.burst, rb.tokens = g.cfg.VerifyRate, g.cfg.VerifyRate, g.cfg.VerifyRate
		}
		g.relays[relayer] = rb
	}
	if !rb.take(now) || !g.verify.take(now) {
		g.mu.Unlock()
		g.count("rate_limited")
		return
	}
	g.mu.Unlock()
	if err := b.verifySignature(g.cfg.View(), g.cfg.Network, now); err != nil {
		g.count(dropReason(err))
		g.log.Debug("bulletin dropped", "relayer", relayer, "error", err)
		return
	}
	g.mu.Lock()
	if _, dup := g.seen[h]; dup { // taken meanwhile
		g.mu.Unlock()
		return
	}
	g.seen[h] = now
	for k, at := range g.seen {
		if now.Sub(at) > 2*BulletinMaxAge {
			delete(g.seen, k)
		}
	}
	g.remember(bulletin)
	g.mu.Unlock()
	g.count("applied")
	g.cfg.OnBulletin(b)
	if err := g.relay(bulletin, h); err != nil {
		g.log.Warn("cannot pass a bulletin on", "error", err)
	}
}

// bulletinID names a bulletin by what its signature covers (an ECDSA
// signature has a second form that verifies too: not a second bulletin).
func bulletinID(enc []byte) [32]byte {
	b, err := DecodeBulletin(enc)
	if err != nil {
		return sha256.Sum256(enc)
	}
	h, err := b.SigHash()
	if err != nil {
		return sha256.Sum256(enc)
	}
	return h
}

// remember keeps bulletin among the recent ones, dropping the stale
// (g.mu held).
func (g *Gossip) remember(bulletin []byte) {
	now := g.cfg.Clock()
	g.recent = slices.DeleteFunc(g.recent, func(e []byte) bool {
		b, err := DecodeBulletin(e)
		return err != nil || now.Sub(time.Unix(b.Time, 0)) > BulletinMaxAge
	})
	g.recent = append(g.recent, bulletin)
	if len(g.recent) > maxRecent {
		g.recent = g.recent[len(g.recent)-maxRecent:]
	}
}

func dropReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{ErrUnsigned, "unsigned"}, {ErrBulletinSig, "signature"}, {ErrIssuer, "issuer"}, {ErrOtherNetwork, "other_network"},
		{ErrStale, "stale"}, {ErrReplayed, "replayed"}, {ErrMalformed, "malformed"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// checkMember verifies a memberlist node's proof: only authenticated
// members of an accepted network enter the graph.
func (g *Gossip) checkMember(n *memberlist.Node) error {
	ip, _ := netip.AddrFromSlice(n.Addr)
	addr := netip.AddrPortFrom(ip.Unmap(), n.Port).String()
	view := g.cfg.View()
	key := sha256.Sum256([]byte(n.Name + "\x00" + addr + "\x00" + string(n.Meta)))
	now := g.cfg.Clock()
	pc := g.checks
	pc.mu.Lock()
	if c, ok := pc.checked[key]; ok && c.index == view.Index() && now.Before(c.until) {
		pc.mu.Unlock()
		// memberlist repeats alive messages: each proof is checked once
		// per view; a revocation that came by bulletin (the view's index
		// unmoved) is looked up each time, without a signature check.
		if c.err == nil && (nodeRevoked(view, n.Name) || keyRevoked(view, c.kid)) {
			return fmt.Errorf("%w: %s is revoked", ErrProof, n.Name)
		}
		return c.err
	}
	pc.mu.Unlock()
	err := g.verifyMember(n.Name, addr, n.Meta, now)
	p, _ := DecodeProof(n.Meta)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err == nil {
		// A proof older than one accepted of the node is a replay.
		if last := pc.times[n.Name]; p.Time < last {
			err = fmt.Errorf("%w: %s's proof of %s is older than one seen", ErrProof, n.Name, time.Unix(p.Time, 0).UTC().Format(time.RFC3339))
		} else {
			if len(pc.times) >= maxChecked {
				clear(pc.times)
			}
			pc.times[n.Name] = p.Time
		}
	}
	if len(pc.checked) >= maxChecked {
		clear(pc.checked)
	}
	until := now.Add(time.Minute)
	if err == nil {
		until = time.Unix(p.Time, 0).Add(MaxProofAge)
	}
	pc.checked[key] = checkedProof{index: view.Index(), until: until, err: err, kid: p.KID}
	return err
}

// keyRevoked: view revokes the key kid.
func keyRevoked(view trust.View, kid string) bool {
	_, ok := view.Revoked(fsm.RevocationKey, kid)
	return ok
}

// maxChecked bounds the cache of checked proofs and the proof times kept.
const maxChecked = 8192

// proofChecks are the proofs a member checked, by member, address and
// meta, and the newest proof accepted of each node. Each member has its
// own; the scale simulation shares one among its members (Config.checks).
type proofChecks struct {
	mu      sync.Mutex
	checked map[[32]byte]checkedProof
	times   map[string]int64
}

type checkedProof struct {
	index uint64
	until time.Time
	err   error
	kid   string
}

func (g *Gossip) verifyMember(name, addr string, meta []byte, now time.Time) error {
	p, err := DecodeProof(meta)
	if err != nil {
		return err
	}
	accepted, err := g.accepted()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.Verify(ctx, g.cfg.Verifier, accepted, name, addr, now)
}

// accepted is the access list of the current trust view, worked out once
// per view (every alive message asks).
func (g *Gossip) accepted() ([]string, error) {
	view := g.cfg.View()
	g.mu.Lock()
	if g.accView == view && g.accIndex == view.Index() && g.accList != nil {
		defer g.mu.Unlock()
		return g.accList, nil
	}
	g.mu.Unlock()
	anchors, err := trust.Anchors(view, g.cfg.Network)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.accView, g.accIndex, g.accList = view, view.Index(), anchors.Accepted
	g.mu.Unlock()
	return anchors.Accepted, nil
}

// memberEvent records a member's state in the graph.
func (g *Gossip) memberEvent(n *memberlist.Node, state MemberState) {
	p, err := DecodeProof(n.Meta)
	if err != nil {
		return // not in the graph: the alive delegate refused it
	}
	g.mu.Lock()
	m := g.members[n.Name]
	if m == nil {
		m = &Member{Node: n.Name}
		g.members[n.Name] = m
	}
	changed := m.State != state
	if changed {
		m.Since = g.cfg.Clock()
	}
	m.Network, m.Addr, m.Peer, m.State = p.Network, p.Addr, p.Peer, state
	out := *m
	g.mu.Unlock()
	if changed && g.cfg.OnMember != nil && n.Name != g.cfg.Node {
		g.cfg.OnMember(out)
	}
}

// PeerAddr is where member node takes peering sessions, if the graph
// holds it alive and its proof names the address.
func (g *Gossip) PeerAddr(node string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[node]
	if m == nil || m.Peer == "" || m.State == StateDead || m.State == StateLeft || m.State == StateRevoked {
		return "", false
	}
	if m.Network == g.cfg.Network && nodeRevoked(g.cfg.View(), node) {
		return "", false
	}
	return m.Peer, true
}

// SetKeys replaces the keyring, the first key the primary: new keys are
// installed, the primary is used, keys no longer listed are removed
// (serf's install, use, remove, as the roots' keyring moves).
func (g *Gossip) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("gossip: an empty keyring (gossip is always encrypted)")
	}
	for _, k := range keys {
		if len(k) != 32 {
			return fmt.Errorf("gossip: a gossip key is 32 bytes (AES-256), not %d", len(k))
		}
	}
	g.mu.Lock()
	kr := g.keyring
	g.cfg.Keys = slices.Clone(keys)
	g.mu.Unlock()
	if kr == nil {
		return nil // Run uses cfg.Keys
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("gossip: keyring: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: keyring: %w", err)
	}
	for _, old := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := kr.RemoveKey(old); err != nil {
				return fmt.Errorf("gossip: keyring: %w", err)
			}
		}
	}
	return nil
}

// delegate is memberlist's delegate of every kind.
type delegate struct{ g *Gossip }

func (d delegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	if len(d.g.proof) > limit {
		return nil
	}
	return d.g.proof
}
func (d delegate) NotifyMsg(b []byte) { d.g.receive(b) }
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

// LocalState and MergeRemoteState carry the recent bulletins in
// memberlist's push-pull (anti-entropy): a member that missed one in the
// epidemic gets it at the next exchange.
func (d delegate) LocalState(bool) []byte {
	d.g.mu.Lock()
	recent := slices.Clone(d.g.recent)
	d.g.mu.Unlock()
	if len(recent) == 0 {
		return nil
	}
	b, err := encMode.Marshal(recent)
	if err != nil {
		return nil
	}
	return b
}

func (d delegate) MergeRemoteState(buf []byte, _ bool) {
	if len(buf) == 0 {
		return
	}
	var recent [][]byte
	if len(buf) > maxRecent*(MaxBulletinSize+16) || decodeCanonical(buf, &recent) != nil || len(recent) > maxRecent {
		d.g.count("malformed")
		return
	}
	for _, b := range recent {
		d.g.take(b, "push-pull")
	}
}

func (d delegate) NotifyAlive(n *memberlist.Node) error {
	if n.Name == d.g.cfg.Node {
		return nil // this member itself (memberlist's own bootstrap)
	}
	if err := d.g.checkMember(n); err != nil {
		d.g.count("member_refused")
		d.g.log.Warn("gossip member refused", "member", trunc(n.Name), "error", err)
		return err
	}
	return nil
}

func (d delegate) NotifyMerge(peers []*memberlist.Node) error {
	// Each alive member of the remote state meets NotifyAlive as it is
	// merged; one stale entry must not block a whole join.
	for _, n := range peers {
		if n.State == memberlist.StateAlive && n.Name != d.g.cfg.Node {
			if err := d.g.checkMember(n); err != nil {
				d.g.count("member_refused")
			}
		}
	}
	return nil
}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.g.memberEvent(n, StateAlive) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.memberEvent(n, StateAlive) }
func (d delegate) NotifyLeave(n *memberlist.Node) {
	state := StateDead
	if n.State == memberlist.StateLeft {
		state = StateLeft
	}
	d.g.memberEvent(n, state)
}

// broadcast is a queued message, unique by name.
type broadcast struct {
	msg  []byte
	name string
}

func (b broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(broadcast)
	return ok && ob.name == b.name
}
func (b broadcast) Message() []byte  { return b.msg }
func (b broadcast) Finished()        {}
func (b broadcast) Name() string     { return b.name }
func (b broadcast) UniqueBroadcast() {}

// bucket is a token bucket.
type bucket struct {
	rate, burst, tokens float64
	at                  time.Time
}

func (b *bucket) take(now time.Time) bool {
	if !b.at.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("gossip: %q is not HOST:PORT", s)
	}
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("gossip: port %q", port)
	}
	return host, p, nil
}

// hclogWriter feeds memberlist's standard logger into hclog.
// hclogWriter passes memberlist's log to hclog, and tells suspect of the
// line that says a member is suspected.
type hclogWriter struct {
	l       hclog.Logger
	suspect func(name string)
}

// memberlist (v0.6.0, like serf and Consul above it) tells no delegate
// that a member is suspect: the member whose probe failed logs it, and
// that line is the one signal. TestAuthenticatedMembership fails if an
// upgrade changes it.
const (
	suspectPrefix = "memberlist: Suspect "
	suspectSuffix = " has failed, no acks received"
)

func (w hclogWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	if i := strings.Index(s, suspectPrefix); i >= 0 && strings.HasSuffix(s, suspectSuffix) && w.suspect != nil {
		w.suspect(s[i+len(suspectPrefix) : len(s)-len(suspectSuffix)])
	}
	switch {
	case strings.Contains(s, "[ERR]"):
		w.l.Error(s)
	case strings.Contains(s, "[WARN]"):
		w.l.Warn(s)
	default:
		w.l.Debug(s)
	}
	return len(p), nil
}

var _ io.Writer = hclogWriter{}
