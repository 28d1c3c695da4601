package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

// PeerStatus is one session as `keymesh peers list` shows it.
type PeerStatus struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	Role    string `json:"role"`
	// Addr is the address dialled, or the peer's for a connection it made.
	Addr  string    `json:"addr,omitempty"`
	State State     `json:"state"`
	Since time.Time `json:"since"`
	// Inbound: the session's connection was opened by the peer.
	Inbound  bool `json:"inbound"`
	HoldTime int  `json:"hold_time_seconds"`
	// Certificate is the serial of the peer's certificate in the session.
	Certificate  string              `json:"certificate_serial,omitempty"`
	LastSent     *NotificationRecord `json:"last_sent,omitempty"`
	LastReceived *NotificationRecord `json:"last_received,omitempty"`
	// LastDown is why the last session ended.
	LastDown    string `json:"last_down,omitempty"`
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// Established counts the sessions established with the peer.
	Established uint64 `json:"established"`
}

// NotificationRecord is a NOTIFICATION sent or received.
type NotificationRecord struct {
	Code   string    `json:"code"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Internal events of a peer's loop, besides the Machine's.
type (
	evInbound  struct{ c *conn }
	dialResult struct {
		id  uint64
		c   *conn
		err error
	}
	evRecheck struct {
		view      trust.View
		accepted  []string
		exclusive bool // this node's network requires exclusive membership
	}
	evSend struct {
		payload []byte
		reply   chan error
	}
	// evOpened is an OPEN's EvOpen with the other networks it names,
	// taken by the peer's goroutine (the reader's does not write the
	// connection's fields).
	evOpened struct {
		open        EvOpen
		memberships []string
	}
)

// peer runs the session with one peer: its Machine, driven by one
// goroutine (run) from the events of its connections' readers, dials,
// timers and the speaker.
type peer struct {
	s          *Speaker
	key        string
	cfg        PeerConfig
	dial       bool
	configured bool // in Config.Peers: kept when its session ends
	m          *Machine
	events     chan any
	done       chan struct{}

	conns map[uint64]*conn
	dials map[uint64]context.CancelFunc
	last  map[uint64][]byte // the NOTIFICATION to send before closing, by connection
	up    bool              // the session was established (for Handler.Down)
	later []Event           // events the actions raised, stepped next

	in, out atomic.Uint64
	heard   atomic.Int64 // when the last message came (Unix nanoseconds)

	mu sync.Mutex
	st PeerStatus
}

func newPeer(s *Speaker, key string, pc PeerConfig, dial bool) *peer {
	p := &peer{s: s, key: key, cfg: pc, dial: dial, events: make(chan any, 64), done: make(chan struct{}),
		conns: map[uint64]*conn{}, dials: map[uint64]context.CancelFunc{}, last: map[uint64][]byte{}}
	p.m = NewMachine(MachineConfig{Local: s.cfg.NodeID, Peer: pc.ID, Dial: dial, HoldTime: s.cfg.HoldTime,
		OpenTimeout: s.cfg.Limits.OpenTimeout, RetryMin: s.cfg.RetryMin, RetryMax: s.cfg.RetryMax, Rand: s.jitter()},
		func() uint64 { return s.ids.Add(1) })
	p.st = PeerStatus{ID: key, Network: s.cfg.Network, Role: pc.Role.String(), Addr: pc.Addr, Since: s.cfg.Clock()}
	return p
}

// post hands ev to the peer's loop; false once the loop has ended.
func (p *peer) post(ev any) bool {
	select {
	case p.events <- ev:
		return true
	case <-p.done:
		return false
	}
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.MessagesIn, st.MessagesOut = p.in.Load(), p.out.Load()
	return st
}

// run is the peer's loop, until ctx ends or (for a peer that is not
// configured) its session ended.
func (p *peer) run(ctx context.Context) {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := p.m.Next()
		if hd := p.m.HeldDown(); !p.configured && hd.After(p.s.cfg.Clock()) && (next.IsZero() || hd.Before(next)) {
			next = hd // an unconfigured peer held down is kept until then
		}
		if c := p.conns[p.m.Conn()]; c != nil && !c.expires.IsZero() && (next.IsZero() || c.expires.Before(next)) {
			next = c.expires
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			p.step(EvStop{Notification: notification(CodeCease, SubCeaseShutdown, "node %s is stopping", p.s.cfg.NodeID)})
			p.closeAll()
			return
		case ev := <-p.events:
			p.handle(ev)
		case <-timer.C:
			if c := p.conns[p.m.Conn()]; c != nil && !c.expires.IsZero() && !p.s.cfg.Clock().Before(c.expires) {
				p.step(EvRevoked{Notification: notification(CodeCease, SubCeaseExpired, "certificate of %s expired at %s", p.cfg.ID, c.expires.UTC().Format(time.RFC3339))})
			} else {
				p.step(EvTick{})
			}
		}
		if !p.configured && p.m.State() == Idle && len(p.conns) == 0 && len(p.dials) == 0 && !p.s.cfg.Clock().Before(p.m.HeldDown()) {
			p.s.removePeer(p)
			p.drain()
			return
		}
	}
}

// drain hands the connections that reached the ended loop to a new one.
func (p *peer) drain() {
	for {
		select {
		case ev := <-p.events:
			switch e := ev.(type) {
			case evInbound:
				if q := p.s.peerFor(e.c.peer); q != nil && q != p && q.post(e) {
					continue
				}
				p.release(e.c)
				e.c.finish(nil)
			case dialResult:
				if e.c != nil {
					p.release(e.c)
					e.c.finish(nil)
				}
			case evSend:
				e.reply <- fmt.Errorf("%w: %s", ErrNotEstablished, p.key)
			}
		default:
			return
		}
	}
}

func (p *peer) closeAll() {
	for id, cancel := range p.dials {
		cancel()
		delete(p.dials, id)
	}
	for id, c := range p.conns {
		p.release(c)
		c.finish(p.last[id])
		delete(p.conns, id)
	}
	// Dials and inbound connections still in flight find the loop gone.
	p.drain()
}

// release takes c off the count of connections not established.
func (p *peer) release(c *conn) {
	if c.pending {
		c.pending = false
		p.s.pending.Add(-1)
	}
}

func (p *peer) handle(ev any) {
	defer func() {
		if len(p.later) > 0 {
			p.step(nil)
		}
	}()
	switch e := ev.(type) {
	case evInbound:
		p.conns[e.c.id] = e.c
		p.step(EvInbound{Conn: e.c.id})
	case dialResult:
		delete(p.dials, e.id)
		if e.err == nil {
			p.conns[e.id] = e.c
		}
		p.step(EvDialed{Conn: e.id, Err: e.err})
	case evRecheck:
		c := p.conns[p.m.Conn()]
		if c == nil {
			return
		}
		if !slices.Contains(e.accepted, c.peer.Network) {
			p.step(EvRevoked{Notification: notification(CodeCease, SubCeaseRevoked, "network %s is no longer accepted", c.peer.Network)})
		} else if err := trust.CheckChain(e.view, c.chain); err != nil {
			p.step(EvRevoked{Notification: notification(CodeCease, SubCeaseRevoked, "%v", err)})
		} else if e.exclusive && len(c.memberships) > 0 {
			p.step(EvRevoked{Notification: notification(CodeCease, SubCeaseRevoked, "network %s now requires exclusive membership; the peer is a member of %v too", p.s.cfg.Network, c.memberships)})
		}
	case evOpened:
		if c := p.conns[e.open.Conn]; c != nil && e.open.Refuse == nil && c.memberships == nil {
			c.memberships = e.memberships
			// The OPEN was checked before a trust change that made this
			// network exclusive may have been rechecked: ask again.
			if len(c.memberships) > 0 && trust.Exclusive(p.s.cfg.View(), p.s.cfg.Network) {
				n := notification(CodeOpen, SubOpenExclusive, "network %s requires exclusive membership; %s is a member of %v too", p.s.cfg.Network, c.peer.Name, c.memberships)
				e.open.Refuse = &n
				p.s.metrics.handshakeFailed(subcodeName(CodeOpen, SubOpenExclusive))
				p.s.log.Warn("peering OPEN refused", "peer", p.key, "conn", c.id, "reason", n.String())
			}
		}
		p.step(e.open)
	case evSend:
		c := p.conns[p.m.Conn()]
		if c == nil || p.m.State() != Established {
			e.reply <- fmt.Errorf("%w: %s", ErrNotEstablished, p.key)
			return
		}
		body, _ := Encode(Update{Payload: e.payload})
		e.reply <- p.send(c, MsgUpdate, body)
	case Event:
		p.step(e)
	}
}

// step feeds ev (nil: none) and then the events the actions raised.
func (p *peer) step(ev Event) {
	if ev == nil && len(p.later) > 0 {
		ev, p.later = p.later[0], p.later[1:]
	}
	for ev != nil {
		now := p.s.cfg.Clock()
		for _, a := range p.m.Step(now, ev) {
			p.exec(now, a)
		}
		ev = nil
		if len(p.later) > 0 {
			ev, p.later = p.later[0], p.later[1:]
		}
	}
	p.mu.Lock()
	p.syncStateLocked()
	p.mu.Unlock()
}

// syncStateLocked puts the machine's state in the status (p.mu held).
func (p *peer) syncStateLocked() {
	if st := p.m.State(); st != p.st.State {
		p.st.State, p.st.Since = st, p.s.cfg.Clock()
	}
}

// send queues a frame on c; a full queue ends the session.
func (p *peer) send(c *conn, t MsgType, body []byte) error {
	if !c.enqueue(AppendFrame(nil, t, body)) {
		p.later = append(p.later, EvAbort{Conn: c.id, Notification: notification(CodeCease, SubCeaseOutOfResources,
			"%s does not read: %d frames wait", p.cfg.ID, p.s.cfg.Limits.SendQueue)})
		return fmt.Errorf("session: the send queue to %s is full", p.key)
	}
	p.out.Add(1)
	p.s.metrics.message(true, t)
	return nil
}

func (p *peer) exec(now time.Time, a Action) {
	s := p.s
	switch a.Kind {
	case ActDial:
		p.startDial(a.Conn)
	case ActCancelDial:
		if cancel, ok := p.dials[a.Conn]; ok {
			cancel()
		}
	case ActSendOpen:
		c := p.conns[a.Conn]
		if c == nil {
			return
		}
		body, err := p.open(c)
		if err != nil {
			s.log.Error("cannot make our OPEN", "peer", p.key, "error", err)
			p.later = append(p.later, EvAbort{Conn: c.id, Notification: notification(CodeCease, SubCeaseOutOfResources, "OPEN not made")})
			return
		}
		p.send(c, MsgOpen, body)
		if c.startReading() {
			go p.read(c)
		}
		p.mu.Lock()
		p.st.Inbound = c.inbound
		if c.inbound {
			p.st.Addr = c.tc.RemoteAddr().String()
		}
		p.mu.Unlock()
	case ActSendKeepalive:
		if c := p.conns[a.Conn]; c != nil {
			p.send(c, MsgKeepalive, nil)
		}
	case ActSendNotification:
		body, _ := Encode(a.Notification)
		p.last[a.Conn] = AppendFrame(nil, MsgNotification, body)
		s.metrics.notification(true, a.Notification)
		s.metrics.message(true, MsgNotification)
		p.mu.Lock()
		p.st.LastSent = &NotificationRecord{Code: a.Notification.Name(), Reason: a.Notification.Reason, At: now}
		p.mu.Unlock()
	case ActClose:
		if c := p.conns[a.Conn]; c != nil {
			p.release(c)
			c.finish(p.last[a.Conn])
			delete(p.conns, a.Conn)
		}
		delete(p.last, a.Conn)
	case ActEstablished:
		serial := ""
		if c := p.conns[a.Conn]; c != nil {
			p.release(c)
			serial = fsm.FormatSerial(c.chain[0].SerialNumber)
		}
		p.up = true
		p.mu.Lock()
		p.st.Certificate = serial
		p.st.HoldTime = int(a.HoldTime / time.Second)
		p.st.Established++
		p.syncStateLocked() // the handler may look at the status
		p.mu.Unlock()
		s.log.Info("peering session established", "peer", p.key, "hold_time", a.HoldTime.String(), "conn", a.Conn)
		if s.cfg.Handler != nil {
			s.cfg.Handler.Established(p.key)
		}
	case ActDeliver:
		if s.cfg.Handler != nil {
			if a.Refresh {
				s.cfg.Handler.RouteRefresh(p.key)
			} else {
				s.cfg.Handler.Update(p.key, a.Payload)
			}
		}
	case ActDown:
		p.mu.Lock()
		p.st.LastDown, p.st.HoldTime, p.st.Certificate = a.Reason, 0, ""
		p.syncStateLocked()
		p.mu.Unlock()
		if p.up {
			s.log.Info("peering session down", "peer", p.key, "reason", a.Reason, "conn", a.Conn, "retry_in", a.Retry.String())
			if s.cfg.Handler != nil {
				s.cfg.Handler.Down(p.key, a.Reason)
			}
		} else {
			s.log.Debug("peering connection ended", "peer", p.key, "reason", a.Reason, "conn", a.Conn, "retry_in", a.Retry.String())
		}
		p.up = false
	}
}

// startDial dials the peer in the background and brings the result back
// to the loop.
func (p *peer) startDial(id uint64) {
	s := p.s
	if s.pending.Add(1) > int64(s.cfg.Limits.MaxPending) {
		s.pending.Add(-1)
		s.metrics.handshakeFailed("pending_cap")
		p.later = append(p.later, EvDialed{Conn: id, Err: errors.New("too many connections not established")})
		return
	}
	addr := p.cfg.Addr
	if addr == "" && s.cfg.Resolve != nil {
		a, ok := s.cfg.Resolve(p.cfg.ID)
		if !ok {
			s.pending.Add(-1)
			p.later = append(p.later, EvDialed{Conn: id, Err: ErrNotInGraph})
			return
		}
		addr = a
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Limits.OpenTimeout)
	p.dials[id] = cancel
	go func() {
		defer cancel()
		c, err := p.handshakeOutbound(ctx, id, addr)
		if err != nil {
			s.pending.Add(-1)
		}
		if !p.post(dialResult{id: id, c: c, err: err}) && c != nil {
			p.release(c)
			c.finish(nil)
		}
	}()
}

func (p *peer) handshakeOutbound(ctx context.Context, id uint64, addr string) (*conn, error) {
	s := p.s
	nc, err := s.cfg.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	var v verified
	tc := tls.Client(nc, s.tr.client(p.cfg.ID, &v))
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		reason := handshakeReason(err)
		s.metrics.handshakeFailed(reason)
		s.log.Warn("peering handshake failed", "peer", p.key, "addr", addr, "reason", reason, "error", err)
		return nil, fmt.Errorf("TLS with %s: %w", addr, err)
	}
	nc.SetDeadline(time.Time{})
	return newConn(id, tc, false, v, s.cfg.Limits.SendQueue), nil
}

// open makes our OPEN for c.
func (p *peer) open(c *conn) ([]byte, error) {
	s := p.s
	leaf := c.local.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.local.Certificate[0]); err != nil {
			return nil, err
		}
	}
	aud := identity.SPIFFEID{Network: c.peer.Network, Kind: identity.KindNode, Name: c.peer.Name}
	tok, err := s.cfg.Credentials.MintOpen(aud, leaf, s.cfg.Limits.TokenTTL)
	if err != nil {
		return nil, err
	}
	o := Open{NodeID: s.cfg.NodeID, Network: s.cfg.Network, HoldTime: uint16(s.cfg.HoldTime / time.Second),
		Capabilities: []uint16{CapRouteRefresh}, Role: p.cfg.Role.Counterpart(), Token: tok, Memberships: s.cfg.Memberships}
	if k := p.cfg.PSK; k != nil {
		o.PSKID = k.ID
		if o.PSKMAC, err = k.pskMAC(c.tc.ConnectionState(), o); err != nil {
			return nil, err
		}
	}
	return Encode(o)
}

// read turns c's frames into events until c fails or ends.
func (p *peer) read(c *conn) {
	s := p.s
	fr := NewFrameReader(c.tc, s.cfg.Limits.MaxFrame)
	for {
		f, err := fr.Read()
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				s.log.Warn("bad frame from a peer", "peer", p.key, "conn", c.id, "error", err)
				p.post(EvBadFrame{Conn: c.id, Notification: fe.Notification})
			} else {
				p.post(EvClosed{Conn: c.id, Err: err})
			}
			return
		}
		p.in.Add(1)
		p.heard.Store(s.cfg.Clock().UnixNano())
		s.metrics.message(false, f.Type)
		var ev Event
		switch f.Type {
		case MsgOpen:
			if !p.post(p.received(c, f.Body)) {
				return
			}
			continue
		case MsgKeepalive:
			ev = EvKeepalive{Conn: c.id}
		case MsgUpdate:
			if u, err := DecodeUpdate(f.Body); err != nil {
				ev = EvBadFrame{Conn: c.id, Notification: notification(CodeUpdate, 1, "%v", err)}
			} else {
				ev = EvUpdate{Conn: c.id, Payload: u.Payload}
			}
		case MsgRouteRefresh:
			if _, err := DecodeRouteRefresh(f.Body); err != nil {
				ev = EvBadFrame{Conn: c.id, Notification: notification(CodeRouteRefresh, 1, "%v", err)}
			} else {
				ev = EvRouteRefresh{Conn: c.id}
			}
		case MsgNotification:
			n, err := DecodeNotification(f.Body)
			if err != nil {
				n = Notification{Code: CodeCease, Reason: "malformed NOTIFICATION"}
			}
			s.metrics.notification(false, n)
			p.mu.Lock()
			p.st.LastReceived = &NotificationRecord{Code: n.Name(), Reason: n.Reason, At: s.cfg.Clock()}
			p.mu.Unlock()
			s.log.Info("NOTIFICATION from a peer", "peer", p.key, "conn", c.id, "notification", n.String())
			p.post(EvNotification{Conn: c.id, Notification: n})
			return
		}
		if !p.post(ev) {
			return
		}
	}
}

// received checks a peer's OPEN: its EvOpen, with the refusal if it is
// refused, and the other networks it names.
func (p *peer) received(c *conn, body []byte) evOpened {
	s := p.s
	ev := EvOpen{Conn: c.id}
	o, err := DecodeOpen(body)
	if err == nil {
		ev.HoldTime = time.Duration(o.HoldTime) * time.Second
		ev.Refuse = s.checkOpen(p.cfg, c, o)
	} else {
		n := notification(CodeOpen, SubOpenMalformed, "%v", err)
		ev.Refuse = &n
	}
	if ev.Refuse != nil {
		s.metrics.handshakeFailed(subcodeName(CodeOpen, ev.Refuse.Subcode))
		s.log.Warn("peering OPEN refused", "peer", p.key, "conn", c.id, "claimed", o.NodeID, "reason", ev.Refuse.String())
	}
	return evOpened{open: ev, memberships: o.Memberships}
}

// checkOpen checks what a peer's OPEN says against its connection, the
// trust view and the policies: nil to accept it, else the NOTIFICATION
// that refuses it.
func (s *Speaker) checkOpen(pc PeerConfig, c *conn, o Open) *Notification {
	refuse := func(sub uint8, format string, args ...any) *Notification {
		n := notification(CodeOpen, sub, format, args...)
		return &n
	}
	switch {
	case o.Network != c.peer.Network:
		return refuse(SubOpenBadNetwork, "OPEN names network %s, the certificate %s", o.Network, c.peer.Network)
	case o.NodeID != c.peer.Name:
		return refuse(SubOpenBadPeer, "OPEN names node %s, the certificate %s", o.NodeID, c.peer.Name)
	case o.Role != pc.Role:
		return refuse(SubOpenRole, "%s says it is this node's %s; it is configured as this node's %s", o.NodeID, o.Role, pc.Role)
	case len(o.Memberships) > 0 && trust.Exclusive(s.cfg.View(), s.cfg.Network):
		return refuse(SubOpenExclusive, "network %s requires exclusive membership; %s is a member of %v too", s.cfg.Network, o.NodeID, o.Memberships)
	}
	cs := c.tc.ConnectionState()
	if n := checkPSK(pc.PSK, cs, o); n != nil {
		return n
	}
	now := s.cfg.Clock()
	vctx, cancel := context.WithTimeout(context.Background(), s.cfg.Limits.OpenTimeout)
	defer cancel()
	v, err := s.cfg.Verifier.Verify(vctx, identity.VerifyRequest{Token: o.Token, Audience: []string{s.self.String()},
		PeerCert: cs.PeerCertificates[0], RequireBinding: true})
	if err != nil {
		reason := "refused"
		var ve *identity.VerifyError
		if errors.As(err, &ve) {
			reason = ve.Reason
		}
		return refuse(SubOpenAuth, "token refused (%s): %v", reason, err)
	}
	if v.Kind != identity.KindNode || v.Node != c.peer.Name || v.Network != c.peer.Network {
		return refuse(SubOpenBadPeer, "the token is of %s/%s, the certificate of %s", v.Network, v.Node, c.peer.Name)
	}
	// Remembered as long as the verifier would take it: exp plus its skew.
	fresh, full := s.replay.first(v.Claims.ID, v.Claims.Expiry.Add(s.cfg.Verifier.Skew()), now)
	switch {
	case full:
		return refuse(SubOpenReplay, "too many OPEN tokens to remember; try again when some expire")
	case !fresh:
		return refuse(SubOpenReplay, "token %s was shown before", v.Claims.ID)
	}
	d, err := s.cfg.Authorizer.Decide(v.Claims.Principal, policy.PeerConnect, policy.Context{
		Subject: v.Claims.Subject, Node: v.Node, Network: v.Network, Bound: true,
		Peer: &policy.PeerTarget{Relationship: pc.Role.String(), LocalNode: s.cfg.NodeID, LocalNetwork: s.cfg.Network}})
	switch {
	case err != nil:
		return refuse(SubOpenPolicy, "peer.connect: %v", err)
	case !d.Allow && len(d.Reasons) > 0:
		return refuse(SubOpenPolicy, "peer.connect denied by policy %v", d.Reasons)
	case !d.Allow:
		return refuse(SubOpenPolicy, "no policy permits peer.connect for %s as this node's %s", v.Claims.Principal, pc.Role)
	}
	return nil
}
