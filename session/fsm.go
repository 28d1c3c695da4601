package session

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// State is a session's state, as in BGP (RFC 4271 section 8).
type State uint8

// States.
const (
	Idle State = iota
	Connect
	Active
	OpenSent
	OpenConfirm
	Established
)

// MarshalText names the state (JSON, logs).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for st := Idle; st <= Established; st++ {
		if st.String() == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("session: unknown state %q", b)
}

func (s State) String() string {
	switch s {
	case Idle:
		return "Idle"
	case Connect:
		return "Connect"
	case Active:
		return "Active"
	case OpenSent:
		return "OpenSent"
	case OpenConfirm:
		return "OpenConfirm"
	case Established:
		return "Established"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// MachineConfig is what a Machine needs to know of its session.
type MachineConfig struct {
	// Local and Peer are the two node ids; a collision keeps the
	// connection the greater of them opened.
	Local, Peer string
	// Dial: this side opens connections to the peer (a configured peer);
	// otherwise it only takes the peer's.
	Dial bool
	// HoldTime is the hold time this side proposes: 0 (no keepalives, no
	// hold timer) or at least 3 s, whole seconds.
	HoldTime time.Duration
	// OpenTimeout bounds the time from the connection to ESTABLISHED: the
	// peer's OPEN and then its KEEPALIVE must come within it.
	OpenTimeout time.Duration
	// RetryMin and RetryMax bound the pause before a new connection after
	// one failed or ended: it doubles from RetryMin to RetryMax, and a
	// random part (half of it at most) is taken off.
	RetryMin, RetryMax time.Duration
	// Rand draws the jitter; nil is a random source.
	Rand *rand.Rand
}

// Defaults of a MachineConfig.
const (
	DefaultHoldTime    = 30 * time.Second
	DefaultOpenTimeout = 5 * time.Second
	DefaultRetryMin    = time.Second
	DefaultRetryMax    = time.Minute
	// MinHoldTime is the least hold time besides 0 (RFC 4271).
	MinHoldTime = 3 * time.Second
	// MaxHoldTime is the largest (a uint16 of seconds).
	MaxHoldTime = 65535 * time.Second
)

func (c *MachineConfig) withDefaults() {
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// ValidHoldTime checks a hold time: 0, or whole seconds from 3 s to
// 65535 s.
func ValidHoldTime(d time.Duration) error {
	if d == 0 || d >= MinHoldTime && d <= MaxHoldTime && d%time.Second == 0 {
		return nil
	}
	return fmt.Errorf("session: hold time %s is not 0 or whole seconds from %s to %s", d, MinHoldTime, MaxHoldTime)
}

// ActionKind is what a Machine asks its I/O loop to do.
type ActionKind uint8

// Actions.
const (
	// ActDial: open connection Conn to the peer; answer with EvDialed.
	ActDial ActionKind = iota + 1
	// ActCancelDial: connection Conn is not wanted any more (close it if
	// it comes up).
	ActCancelDial
	// ActSendOpen: send our OPEN on Conn.
	ActSendOpen
	// ActSendKeepalive: send a KEEPALIVE on Conn.
	ActSendKeepalive
	// ActSendNotification: send Notification on Conn (then ActClose follows).
	ActSendNotification
	// ActClose: close Conn.
	ActClose
	// ActEstablished: the session on Conn is established (HoldTime is the
	// negotiated one).
	ActEstablished
	// ActDeliver: an UPDATE (Payload) or, with Refresh, a ROUTE-REFRESH
	// arrived in the established session.
	ActDeliver
	// ActDown: the session on Conn ended (Reason says why; Notification
	// is what was sent or received, if any). Retry is the pause before the
	// next connection (0: none planned).
	ActDown
)

// Action is one thing to do.
type Action struct {
	Kind         ActionKind
	Conn         uint64
	Notification Notification
	Payload      []byte
	Refresh      bool
	HoldTime     time.Duration
	Reason       string
	Retry        time.Duration
}

func (a Action) String() string {
	c := fmt.Sprintf("c%d", a.Conn)
	switch a.Kind {
	case ActDial:
		return "dial " + c
	case ActCancelDial:
		return "cancel-dial " + c
	case ActSendOpen:
		return "send OPEN " + c
	case ActSendKeepalive:
		return "send KEEPALIVE " + c
	case ActSendNotification:
		return "send NOTIFICATION " + c + " " + a.Notification.String()
	case ActClose:
		return "close " + c
	case ActEstablished:
		return "established " + c + " hold=" + a.HoldTime.String()
	case ActDeliver:
		if a.Refresh {
			return "deliver ROUTE-REFRESH " + c
		}
		return fmt.Sprintf("deliver UPDATE %s %d bytes", c, len(a.Payload))
	case ActDown:
		s := "down " + c + ": " + a.Reason
		if a.Retry > 0 {
			s += ", retry in " + a.Retry.String()
		}
		return s
	}
	return fmt.Sprintf("action(%d)", a.Kind)
}

// Event is what happened: one of the Ev types.
type Event interface{ event() }

// Events.
type (
	// EvStart starts the session (a configured peer: it dials).
	EvStart struct{}
	// EvStop ends the session with Notification and does not reconnect.
	EvStop struct{ Notification Notification }
	// EvReset ends the session with Notification and connects again at once.
	EvReset struct{ Notification Notification }
	// EvDialed answers ActDial: Conn is up (TLS done, the peer is who we
	// dialled) or failed with Err.
	EvDialed struct {
		Conn uint64
		Err  error
	}
	// EvInbound: the peer opened Conn (TLS done, its certificate names it).
	EvInbound struct{ Conn uint64 }
	// EvOpen: the peer's OPEN arrived on Conn. Refuse, when set, is the
	// NOTIFICATION that refuses it (identity, token, policy); HoldTime is
	// the peer's proposal.
	EvOpen struct {
		Conn     uint64
		HoldTime time.Duration
		Refuse   *Notification
	}
	// EvKeepalive: a KEEPALIVE arrived on Conn.
	EvKeepalive struct{ Conn uint64 }
	// EvUpdate: an UPDATE arrived on Conn.
	EvUpdate struct {
		Conn    uint64
		Payload []byte
	}
	// EvRouteRefresh: a ROUTE-REFRESH arrived on Conn.
	EvRouteRefresh struct{ Conn uint64 }
	// EvNotification: the peer sent a NOTIFICATION on Conn.
	EvNotification struct {
		Conn         uint64
		Notification Notification
	}
	// EvBadFrame: a frame on Conn was refused; Notification answers it.
	EvBadFrame struct {
		Conn         uint64
		Notification Notification
	}
	// EvClosed: Conn ended (the peer closed it, a read or write failed).
	EvClosed struct {
		Conn uint64
		Err  error
	}
	// EvRevoked: the peer's credentials are revoked or expired; the
	// session ends with Notification.
	EvRevoked struct{ Notification Notification }
	// EvHoldDown ends the session with Notification (the routing layer's
	// maximum number of prefixes reached) and keeps it down for For: no
	// dial before then, and the peer's connections are refused.
	EvHoldDown struct {
		Notification Notification
		For          time.Duration
	}
	// EvAbort: this side cannot go on with Conn (its send queue is full,
	// a token cannot be minted); the session ends with Notification.
	EvAbort struct {
		Conn         uint64
		Notification Notification
	}
	// EvTick: time passed; due timers fire.
	EvTick struct{}
)

func (EvStart) event()        {}
func (EvHoldDown) event()     {}
func (EvStop) event()         {}
func (EvReset) event()        {}
func (EvDialed) event()       {}
func (EvInbound) event()      {}
func (EvOpen) event()         {}
func (EvKeepalive) event()    {}
func (EvUpdate) event()       {}
func (EvRouteRefresh) event() {}
func (EvNotification) event() {}
func (EvBadFrame) event()     {}
func (EvClosed) event()       {}
func (EvRevoked) event()      {}
func (EvAbort) event()        {}
func (EvTick) event()         {}

// Machine is the state machine of one peering session: a pure step
// function (state, event, now → state, actions) with no I/O and no clock
// of its own. The I/O loop feeds it events, carries out its actions and
// calls Step with EvTick at Next. It holds one connection at a time; a
// second one for the same peer is a collision, which keeps the connection
// that the greater node id opened (both sides agree on it).
type Machine struct {
	cfg   MachineConfig
	state State

	conn    uint64 // the connection of the session, 0 if none
	inbound bool   // conn was opened by the peer
	dialing uint64 // a dial in flight, 0 if none
	nextID  func() uint64

	hold     time.Duration // negotiated
	attempts int           // failed or ended sessions since the last established one
	stopped  bool          // EvStop: no reconnection
	downTill time.Time     // EvHoldDown: no session before then

	openDeadline time.Time // OpenSent, OpenConfirm: ESTABLISHED by then
	holdDeadline time.Time // OpenConfirm, Established with hold > 0
	keepaliveAt  time.Time // OpenConfirm, Established with hold > 0
	retryAt      time.Time // Idle/Active: dial then

	acts []Action
}

// NewMachine makes a machine in Idle. nextID names new connections (the
// I/O loop's connection ids; they must be unique and not 0).
func NewMachine(cfg MachineConfig, nextID func() uint64) *Machine {
	cfg.withDefaults()
	return &Machine{cfg: cfg, nextID: nextID}
}

// State is the current state.
func (m *Machine) State() State { return m.state }

// Conn is the connection of the session, 0 if none.
func (m *Machine) Conn() uint64 { return m.conn }

// HoldTime is the negotiated hold time (OpenConfirm and Established).
func (m *Machine) HoldTime() time.Duration { return m.hold }

// Next is when the machine next needs EvTick; zero if never.
func (m *Machine) Next() time.Time {
	var next time.Time
	for _, t := range []time.Time{m.openDeadline, m.holdDeadline, m.keepaliveAt, m.retryAt} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// HeldDown is when an EvHoldDown ends (zero: none was given).
func (m *Machine) HeldDown() time.Time { return m.downTill }

// Step takes one event at now and returns what to do, in order.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.acts = nil
	switch e := ev.(type) {
	case EvStart:
		m.stopped = false
		if m.state == Idle && m.conn == 0 {
			m.attempts = 0
			m.startDial(now)
		}
	case EvStop:
		m.stopped = true
		m.retryAt = time.Time{}
		m.cancelDial()
		if m.conn != 0 {
			m.fail(now, e.Notification, true, "stopped")
		}
		m.state = Idle
	case EvReset:
		m.downTill = time.Time{} // the operator's reset ends a hold-down
		m.cancelDial()
		if m.conn != 0 {
			stopped := m.stopped
			m.stopped = true // no retry later: at once, below
			m.fail(now, e.Notification, true, "reset")
			m.stopped = stopped
		}
		m.attempts = 0
		if m.cfg.Dial && !m.stopped {
			m.retryAt = time.Time{}
			m.startDial(now)
		}
	case EvRevoked:
		if m.conn != 0 {
			m.fail(now, e.Notification, true, "peer credentials: "+e.Notification.Reason)
		}
	case EvHoldDown:
		m.downTill = now.Add(e.For)
		m.cancelDial()
		if m.conn != 0 {
			m.fail(now, e.Notification, true, "held down for "+e.For.String()+": "+e.Notification.Reason)
		} else if m.cfg.Dial && !m.stopped {
			m.retryAt = m.downTill
			m.state = Active
		}
	case EvDialed:
		m.dialed(now, e)
	case EvInbound:
		m.inboundConn(now, e.Conn)
	case EvOpen:
		m.open(now, e)
	case EvKeepalive:
		if e.Conn != m.conn {
			break
		}
		switch m.state {
		case OpenConfirm:
			m.state = Established
			m.attempts = 0
			m.openDeadline = time.Time{}
			m.armHold(now)
			m.do(Action{Kind: ActEstablished, Conn: m.conn, HoldTime: m.hold})
		case Established:
			m.armHold(now)
		default:
			m.unexpected(now, "KEEPALIVE")
		}
	case EvUpdate:
		if e.Conn == m.conn {
			m.established(now, "UPDATE", Action{Kind: ActDeliver, Conn: m.conn, Payload: e.Payload})
		}
	case EvRouteRefresh:
		if e.Conn == m.conn {
			m.established(now, "ROUTE-REFRESH", Action{Kind: ActDeliver, Conn: m.conn, Refresh: true})
		}
	case EvNotification:
		if e.Conn == m.conn {
			m.do(Action{Kind: ActClose, Conn: m.conn})
			m.down(now, e.Notification, "NOTIFICATION received: "+e.Notification.String())
		}
	case EvBadFrame:
		if e.Conn == m.conn {
			m.fail(now, e.Notification, false, "bad frame: "+e.Notification.String())
		}
	case EvAbort:
		if e.Conn == m.conn {
			m.fail(now, e.Notification, true, "aborted: "+e.Notification.String())
		}
	case EvClosed:
		if e.Conn == m.conn {
			reason := "connection closed"
			if e.Err != nil {
				reason += ": " + e.Err.Error()
			}
			m.do(Action{Kind: ActClose, Conn: m.conn})
			m.down(now, Notification{}, reason)
		}
	case EvTick:
		m.tick(now)
	}
	return m.acts
}

func (m *Machine) do(a Action) { m.acts = append(m.acts, a) }

func (m *Machine) startDial(now time.Time) {
	if !m.cfg.Dial {
		m.state = Active
		return
	}
	m.state = Connect
	m.dialing = m.nextID()
	m.do(Action{Kind: ActDial, Conn: m.dialing})
}

func (m *Machine) cancelDial() {
	if m.dialing != 0 {
		m.do(Action{Kind: ActCancelDial, Conn: m.dialing})
		m.dialing = 0
	}
}

// adopt makes c the session's connection and sends our OPEN.
func (m *Machine) adopt(now time.Time, c uint64, inbound bool) {
	m.conn, m.inbound = c, inbound
	m.state = OpenSent
	m.retryAt = time.Time{}
	m.openDeadline = now.Add(m.cfg.OpenTimeout)
	m.do(Action{Kind: ActSendOpen, Conn: c})
}

// refuse ends connection c, which is not the session's, with a Cease.
func (m *Machine) refuse(c uint64, sub uint8, reason string) {
	m.do(Action{Kind: ActSendNotification, Conn: c, Notification: notification(CodeCease, sub, "%s", reason)})
	m.do(Action{Kind: ActClose, Conn: c})
}

// localWins: in a collision the connection this side opened stays (the
// greater node id's does).
func (m *Machine) localWins() bool { return m.cfg.Local > m.cfg.Peer }

func (m *Machine) dialed(now time.Time, e EvDialed) {
	if e.Conn != m.dialing {
		if e.Err == nil {
			m.do(Action{Kind: ActClose, Conn: e.Conn}) // cancelled meanwhile
		}
		return
	}
	m.dialing = 0
	if e.Err != nil {
		if m.conn == 0 {
			m.conn = e.Conn // for the record of the down
			m.down(now, Notification{}, "dial failed: "+e.Err.Error())
		}
		return
	}
	switch {
	case m.conn == 0:
		m.adopt(now, e.Conn, false)
	case m.state == Established || m.state == OpenConfirm:
		m.refuse(e.Conn, SubCeaseCollision, "a session with "+m.cfg.Local+" is up already")
	case m.localWins():
		// Ours (the greater id's) wins over the peer's connection.
		m.refuse(m.conn, SubCeaseCollision, "connection collision: the one "+m.cfg.Local+" opened stays")
		m.adopt(now, e.Conn, false)
	default:
		m.refuse(e.Conn, SubCeaseCollision, "connection collision: the one "+m.cfg.Peer+" opened stays")
	}
}

func (m *Machine) inboundConn(now time.Time, c uint64) {
	switch {
	case now.Before(m.downTill):
		m.refuse(c, SubCeaseRejected, m.cfg.Local+" holds the session with "+m.cfg.Peer+" down until "+m.downTill.UTC().Format(time.RFC3339))
	case m.conn == 0 && m.dialing == 0:
		m.adopt(now, c, true)
	case m.conn == 0: // our dial is in flight
		if m.localWins() {
			m.refuse(c, SubCeaseCollision, "connection collision: the one "+m.cfg.Local+" opens stays")
			return
		}
		m.cancelDial()
		m.adopt(now, c, true)
	case m.state == Established || m.state == OpenConfirm || m.inbound:
		m.refuse(c, SubCeaseCollision, "a session with "+m.cfg.Local+" is up or opening already")
	case m.localWins():
		m.refuse(c, SubCeaseCollision, "connection collision: the one "+m.cfg.Local+" opened stays")
	default:
		m.refuse(m.conn, SubCeaseCollision, "connection collision: the one "+m.cfg.Peer+" opened stays")
		m.conn = 0
		m.adopt(now, c, true)
	}
}

func (m *Machine) open(now time.Time, e EvOpen) {
	if e.Conn != m.conn {
		return
	}
	if m.state != OpenSent {
		m.unexpected(now, "OPEN")
		return
	}
	if e.Refuse != nil {
		m.fail(now, *e.Refuse, true, "OPEN refused: "+e.Refuse.String())
		return
	}
	if err := ValidHoldTime(e.HoldTime); err != nil {
		m.fail(now, notification(CodeOpen, SubOpenHoldTime, "hold time %s: 0 or 3s to 65535s", e.HoldTime), true, "OPEN refused: bad hold time")
		return
	}
	m.hold = min(m.cfg.HoldTime, e.HoldTime)
	if m.cfg.HoldTime == 0 || e.HoldTime == 0 {
		m.hold = 0
	}
	m.state = OpenConfirm
	m.do(Action{Kind: ActSendKeepalive, Conn: m.conn})
	m.armKeepalive(now)
}

// established handles a message only an established session takes.
func (m *Machine) established(now time.Time, what string, a Action) {
	if m.state != Established {
		m.unexpected(now, what)
		return
	}
	m.armHold(now)
	m.do(a)
}

// unexpected refuses a message the state does not take (RFC 6608).
func (m *Machine) unexpected(now time.Time, what string) {
	sub := uint8(0)
	switch m.state {
	case OpenSent:
		sub = SubFSMOpenSent
	case OpenConfirm:
		sub = SubFSMOpenConfirm
	case Established:
		sub = SubFSMEstablished
	}
	m.fail(now, notification(CodeFSM, sub, "%s in %s", what, m.state), true, what+" in "+m.state.String())
}

func (m *Machine) armHold(now time.Time) {
	if m.hold > 0 {
		m.holdDeadline = now.Add(m.hold)
	}
}

func (m *Machine) armKeepalive(now time.Time) {
	if m.hold > 0 {
		m.keepaliveAt = now.Add(m.hold / 3)
		if m.state == OpenConfirm {
			m.holdDeadline = now.Add(m.hold)
		}
	}
}

// fail ends the session with n (sent when send), closing the connection.
func (m *Machine) fail(now time.Time, n Notification, send bool, reason string) {
	if send || n.Code != 0 {
		m.do(Action{Kind: ActSendNotification, Conn: m.conn, Notification: n})
	}
	m.do(Action{Kind: ActClose, Conn: m.conn})
	m.down(now, n, reason)
}

// down records the end of the connection and plans the next one.
func (m *Machine) down(now time.Time, n Notification, reason string) {
	c := m.conn
	m.conn, m.inbound, m.hold = 0, false, 0
	m.openDeadline, m.holdDeadline, m.keepaliveAt = time.Time{}, time.Time{}, time.Time{}
	m.state = Idle
	a := Action{Kind: ActDown, Conn: c, Notification: n, Reason: reason}
	if m.cfg.Dial && !m.stopped && m.dialing == 0 {
		m.attempts++
		a.Retry = max(m.backoff(), m.downTill.Sub(now))
		m.retryAt = now.Add(a.Retry)
		m.state = Active
	}
	m.do(a)
}

// backoff is the pause before the next connection: RetryMin doubled per
// attempt up to RetryMax, less a random part of at most half.
func (m *Machine) backoff() time.Duration {
	d := m.cfg.RetryMin
	for i := 1; i < m.attempts && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, m.cfg.RetryMax)
	half := d / 2
	return d - time.Duration(m.cfg.Rand.Int64N(int64(half)+1)).Truncate(time.Millisecond)
}

func (m *Machine) tick(now time.Time) {
	due := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	switch {
	case due(m.openDeadline):
		what := "OPEN"
		if m.state == OpenConfirm {
			what = "KEEPALIVE"
		}
		m.fail(now, notification(CodeHoldExpired, 0, "no %s within %s", what, m.cfg.OpenTimeout), true, "no "+what+" in time")
		return
	case due(m.holdDeadline):
		m.fail(now, notification(CodeHoldExpired, 0, "nothing from the peer for %s", m.hold), true, "hold timer expired")
		return
	}
	if due(m.keepaliveAt) && m.conn != 0 {
		m.do(Action{Kind: ActSendKeepalive, Conn: m.conn})
		m.keepaliveAt = now.Add(m.hold / 3)
	}
	if due(m.retryAt) {
		m.retryAt = time.Time{}
		if m.conn == 0 && m.dialing == 0 && !m.stopped {
			m.startDial(now)
		}
	}
}
