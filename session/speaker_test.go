package session

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

// TestSessionEstablishes: a dials b; both sides verify each other's
// certificate, token and policy and reach ESTABLISHED; UPDATE and
// ROUTE-REFRESH reach the other side's handler.
func TestSessionEstablishes(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	b.start(b.config())
	a.start(a.config(PeerConfig{ID: "b", Addr: b.addr()}))
	if p := a.handler.waitUp(t); p != "b" {
		t.Fatalf("a established with %q", p)
	}
	if p := b.handler.waitUp(t); p != "a" {
		t.Fatalf("b established with %q", p)
	}
	st := b.status(t, "a")
	if st.State != Established || !st.Inbound || st.HoldTime != 30 || st.Role != "internal" ||
		st.Certificate != fsm.FormatSerial(a.cert.Load().SerialNumber) {
		t.Fatalf("b's view of a: %+v", st)
	}
	if st := a.status(t, "b"); st.State != Established || st.Inbound || st.Addr != b.addr() {
		t.Fatalf("a's view of b: %+v", st)
	}
	must(t, a.speaker.Send("b", []byte("route 10.0.0.0/8")))
	if got := recv(t, b.handler.updates, "an UPDATE"); string(got) != "route 10.0.0.0/8" {
		t.Fatalf("b got %q", got)
	}
	if err := b.speaker.Send("nobody", []byte("x")); err == nil {
		t.Fatal("an UPDATE to no peer was sent")
	}
	var buf bytes.Buffer
	must(t, b.speaker.WritePrometheus(&buf))
	for _, want := range []string{`keymesh_sessions{state="Established"} 1`, `keymesh_session_messages_total{direction="received",type="UPDATE"} 1`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, buf.String())
		}
	}
	// A stopping node tells its peers why.
	a.stop()
	a.stop = nil
	b.handler.waitDown(t)
	if st := b.status(t, "a"); st.LastReceived == nil || st.LastReceived.Code != "cease/shutdown" {
		t.Fatalf("b's last NOTIFICATION from a: %+v", st.LastReceived)
	}
}

// TestRevokedPeerTornDown: when the trust view revokes a peer's node,
// certificate or key, its sessions end at once with Cease/credential-revoked,
// and the other sessions stay.
func TestRevokedPeerTornDown(t *testing.T) {
	for _, c := range []struct {
		name string
		rev  func(n *testNode) fsm.Revocation
	}{
		{"node", func(n *testNode) fsm.Revocation { return fsm.Revocation{Kind: fsm.RevocationNode, ID: n.id} }},
		{"cert", func(n *testNode) fsm.Revocation {
			return fsm.Revocation{Kind: fsm.RevocationCert, ID: fsm.FormatSerial(n.cert.Load().SerialNumber)}
		}},
		{"key", func(n *testNode) fsm.Revocation {
			kid, _ := identity.Thumbprint(n.key.Public())
			return fsm.Revocation{Kind: fsm.RevocationKey, ID: kid}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestMesh(t)
			a, b, x := m.node("a"), m.node("b"), m.node("x")
			b.start(b.config())
			a.start(a.config(PeerConfig{ID: "b", Addr: b.addr()}))
			x.start(x.config(PeerConfig{ID: "b", Addr: b.addr()}))
			b.handler.waitUp(t)
			b.handler.waitUp(t)
			a.handler.waitUp(t)
			x.handler.waitUp(t)
			r := c.rev(a)
			r.Time = time.Now()
			m.apply(trust.Records{Revocations: []fsm.Revocation{r}})
			if d := b.handler.waitDown(t); !strings.HasPrefix(d, "a: peer credentials") {
				t.Fatalf("b: %s", d)
			}
			a.handler.waitDown(t)
			if st := a.status(t, "b"); st.LastReceived == nil || st.LastReceived.Code != "cease/credential-revoked" {
				t.Fatalf("a was told %+v", st.LastReceived)
			}
			if st := b.status(t, "x"); st.State != Established || st.Established != 1 {
				t.Fatalf("the session with x blinked: %+v", st)
			}
		})
	}
}

// TestExpiredCertificateTornDown: when the certificate a session was
// opened with expires, the session ends at that moment with
// Cease/credential-expired, and the certificate opens no new one.
func TestExpiredCertificateTornDown(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	notAfter := time.Now().Add(2 * time.Second)
	a.setCert(m.issue(a.key, "a", notAfter.Add(-time.Hour), time.Hour))
	b.start(b.config())
	a.start(a.config(PeerConfig{ID: "b", Addr: b.addr()}))
	a.handler.waitUp(t)
	b.handler.waitUp(t)
	d := b.handler.waitDown(t)
	if now := time.Now(); now.Before(a.cert.Load().NotAfter) {
		t.Fatalf("b ended the session before a's certificate expired (%s): %s", a.cert.Load().NotAfter, d)
	}
	a.handler.waitDown(t)
	if st := a.status(t, "b"); st.LastReceived == nil || st.LastReceived.Code != "cease/credential-expired" {
		t.Fatalf("a was told %+v", st.LastReceived)
	}
	// a dials again with its expired certificate: refused in the handshake
	// (the chain is not valid now), counted.
	deadline := time.After(10 * time.Second)
	for b.speaker.Metrics().Count(metricHandshake, `reason="chain"`) == 0 {
		select {
		case <-deadline:
			t.Fatalf("no handshake refused after the expiry; b's log:\n%s", b.log.String())
		case <-time.After(10 * time.Millisecond): // the redial comes by a's backoff
		}
	}
	if st := b.status(t, "a"); st.State == Established {
		t.Fatalf("an expired certificate holds a session: %+v", st)
	}
}

// TestRenewedCertificateNextHandshake: a renewed certificate is presented
// by the next handshake, without a restart.
func TestRenewedCertificateNextHandshake(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	b.start(b.config())
	a.start(a.config(PeerConfig{ID: "b", Addr: b.addr()}))
	a.handler.waitUp(t)
	b.handler.waitUp(t)
	old := b.status(t, "a").Certificate
	a.setCert(m.issue(a.key, "a", time.Now().Add(-time.Minute), 2*time.Hour))
	must(t, a.speaker.Reset("b"))
	b.handler.waitDown(t)
	b.handler.waitUp(t)
	if now := b.status(t, "a").Certificate; now == old || now != fsm.FormatSerial(a.cert.Load().SerialNumber) {
		t.Fatalf("b sees certificate %s after the renewal (was %s)", now, old)
	}
}

// TestCollision: both dial at once; one session stays, the one the greater
// node id opened, on both sides.
func TestCollision(t *testing.T) {
	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	ca, cb := a.config(), b.config()
	ca.Peers = []PeerConfig{{ID: "b", Addr: b.addr()}}
	cb.Peers = []PeerConfig{{ID: "a", Addr: a.addr()}}
	a.start(ca)
	b.start(cb)
	a.handler.waitUp(t)
	b.handler.waitUp(t)
	sa, sb := a.status(t, "b"), b.status(t, "a")
	if !sa.Inbound || sb.Inbound || sa.Established != 1 || sb.Established != 1 {
		t.Fatalf("a sees %+v, b sees %+v: want the session b opened, once", sa, sb)
	}
}

// TestPreSharedKey: a peer configured with a key must prove it and this
// channel in its OPEN; a wrong, missing or unexpected key is refused.
func TestPreSharedKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		secret := make([]byte, 32)
		rand.Read(secret)
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(hex.EncodeToString(secret)+"\n"), mode))
		return p
	}
	good := write("good.key", 0o600)
	k, err := LoadPSK(good)
	must(t, err)
	k2, err := LoadPSK(good)
	must(t, err)
	if k.ID != k2.ID || len(k.ID) != 16 {
		t.Fatalf("key ids %s %s", k.ID, k2.ID)
	}
	if _, err := LoadPSK(write("open.key", 0o644)); err == nil {
		t.Fatal("a key file readable by others was taken")
	}
	short := filepath.Join(dir, "short.key")
	must(t, os.WriteFile(short, []byte("abcd\n"), 0o600))
	if _, err := LoadPSK(short); err == nil {
		t.Fatal("a short key was taken")
	}
	other, err := LoadPSK(write("other.key", 0o600))
	must(t, err)

	m := newTestMesh(t)
	a, b := m.node("a"), m.node("b")
	b.start(b.config(PeerConfig{ID: "a", PSK: k}))
	// The right key: established.
	a.start(a.config(PeerConfig{ID: "b", Addr: b.addr(), PSK: k}))
	a.handler.waitUp(t)
	b.handler.waitUp(t)
	a.stop()
	a.stop = nil
	b.handler.waitDown(t)

	raw := func(edit func(*Open)) Notification {
		t.Helper()
		r, err := m.raw(a, b, "a")
		must(t, err)
		r.openAs(a, b, edit)
		return r.notification()
	}
	// No key, another key, a MAC of another connection.
	if n := raw(nil); n.Code != CodeOpen || n.Subcode != SubOpenPSK {
		t.Fatalf("no key: %s", n)
	}
	if n := raw(func(o *Open) { o.PSKID, o.PSKMAC = other.ID, make([]byte, 32) }); n.Subcode != SubOpenPSK {
		t.Fatalf("another key: %s", n)
	}
	if n := raw(func(o *Open) { o.PSKID, o.PSKMAC = k.ID, make([]byte, 32) }); n.Subcode != SubOpenPSK {
		t.Fatalf("a bad MAC: %s", n)
	}
	// A key offered to a node that has none for the peer.
	c := m.node("c")
	c.start(c.config())
	r, err := m.raw(a, c, "a")
	must(t, err)
	r.openAs(a, c, func(o *Open) { o.PSKID, o.PSKMAC = k.ID, make([]byte, 32) })
	if n := r.notification(); n.Subcode != SubOpenPSK {
		t.Fatalf("unexpected key: %s", n)
	}
	if got := b.speaker.Metrics().Count(metricHandshake, `reason="psk"`); got != 3 {
		t.Fatalf("%d PSK refusals counted, want 3", got)
	}
}

// TestPolicyDecidesPeering: Cedar decides peer.connect with the
// relationship; a refusal names the policy.
func TestPolicyDecidesPeering(t *testing.T) {
	m := newTestMesh(t)
	ps, err := policy.ParsePolicies(policy.DefaultText() + `
@id("no-customer-sessions")
forbid (principal, action == Action::"peer.connect", resource) when { context.relationship == "customer" };`)
	must(t, err)
	m.policy.SetPolicies(ps)
	a, b := m.node("a"), m.node("b")
	b.start(b.config(PeerConfig{ID: "a", Role: RoleCustomer}))
	r, err := m.raw(a, b, "a")
	must(t, err)
	r.openAs(a, b, func(o *Open) { o.Role = RoleCustomer })
	n := r.notification()
	if n.Code != CodeOpen || n.Subcode != SubOpenPolicy || !strings.Contains(n.Reason, "no-customer-sessions") {
		t.Fatalf("refusal %s", n)
	}
	if got := b.speaker.Metrics().Count(metricHandshake, `reason="policy"`); got != 1 {
		t.Fatalf("policy refusals counted %d", got)
	}
}

// TestLimitsBeforeOpen: connections not established are capped, the rate
// per source is capped, an OPEN must come in time, and a peer that does
// not read loses its session.
func TestLimitsBeforeOpen(t *testing.T) {
	t.Run("open deadline", func(t *testing.T) {
		m := newTestMesh(t)
		a, b := m.node("a"), m.node("b")
		cfg := b.config()
		cfg.Limits.OpenTimeout = 200 * time.Millisecond
		b.start(cfg)
		r, err := m.raw(a, b, "a")
		must(t, err)
		if n := r.notification(); n.Code != CodeHoldExpired {
			t.Fatalf("a peer that never sends OPEN: %s", n)
		}
		r.closed()
	})
	t.Run("pending cap", func(t *testing.T) {
		// Three nodes, so that no connection is refused as the second of
		// its node (which would free its place).
		m := newTestMesh(t)
		a, c, d, b := m.node("a"), m.node("c"), m.node("d"), m.node("b")
		cfg := b.config()
		cfg.Limits.MaxPending, cfg.Limits.ConnRate, cfg.Limits.ConnBurst = 2, 100, 100
		b.start(cfg)
		for i, n := range []*testNode{a, c} {
			if _, err := m.raw(n, b, n.id); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		if _, err := m.raw(d, b, "d"); err == nil {
			t.Fatal("a third connection not established was taken")
		}
		if got := b.speaker.Metrics().Count(metricHandshake, `reason="pending_cap"`); got != 1 {
			t.Fatalf("pending cap refusals %d", got)
		}
	})
	t.Run("rate per source", func(t *testing.T) {
		m := newTestMesh(t)
		a, b := m.node("a"), m.node("b")
		cfg := b.config()
		cfg.Limits.ConnRate, cfg.Limits.ConnBurst = 0.001, 2
		b.start(cfg)
		for i := range 2 {
			if _, err := m.raw(a, b, "10.0.0.1"); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		if _, err := m.raw(a, b, "10.0.0.1"); err == nil {
			t.Fatal("a third connection from one source within the burst was taken")
		}
		if _, err := m.raw(a, b, "10.0.0.2"); err != nil {
			t.Fatalf("another source was refused: %v", err)
		}
		if got := b.speaker.Metrics().Count(metricHandshake, `reason="rate"`); got != 1 {
			t.Fatalf("rate refusals %d", got)
		}
	})
	t.Run("send queue", func(t *testing.T) {
		m := newTestMesh(t)
		a, b := m.node("a"), m.node("b")
		cfg := b.config()
		cfg.Limits.SendQueue = 4
		b.start(cfg)
		r, err := m.raw(a, b, "a")
		must(t, err)
		r.openAs(a, b, nil)
		r.expect(MsgKeepalive)
		r.send(MsgKeepalive, Keepalive{})
		b.handler.waitUp(t)
		// a reads no more: b's queue fills and b ends the session.
		var sendErr error
		for i := 0; i < 100 && sendErr == nil; i++ {
			sendErr = b.speaker.Send("a", bytes.Repeat([]byte{1}, 1000))
		}
		if sendErr == nil {
			t.Fatal("100 UPDATEs queued to a peer that does not read")
		}
		if d := b.handler.waitDown(t); !strings.Contains(d, "out-of-resources") {
			t.Fatalf("b: %s", d)
		}
	})
}

// TestOpenRefusals: what a peer may not do before its session is
// established, each refused with the NOTIFICATION that says why, the
// connection closed, and nothing else changed.
func TestOpenRefusals(t *testing.T) {
	m := newTestMesh(t)
	a, b, x := m.node("a"), m.node("b"), m.node("x")
	b.start(b.config())
	// An expired token: minted by a clock two hours behind.
	late := m.node("late")
	late.setCert(m.issue(late.key, "late", time.Now().Add(-3*time.Hour), 4*time.Hour))
	old, err := identity.NewMinter(identity.MinterConfig{Key: late.key, Cert: late.cert.Load(), Chain: nil,
		Clock: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	must(t, err)
	expired, _, err := old.Mint(identity.MintRequest{Audience: []string{b.spiffe().String()}, TTL: time.Minute,
		Principal: identity.PrincipalNode, BindCert: late.cert.Load()})
	must(t, err)
	unbound, _, err := a.minter.Load().Mint(identity.MintRequest{Audience: []string{b.spiffe().String()}, TTL: time.Minute, Principal: identity.PrincipalNode})
	must(t, err)
	otherAud, err := a.MintOpen(x.spiffe(), a.cert.Load(), time.Minute)
	must(t, err)
	aTok, err := a.MintOpen(b.spiffe(), a.cert.Load(), time.Minute)
	must(t, err)

	cases := []struct {
		name string
		as   *testNode
		do   func(r *rawPeer)
		code uint8
		sub  uint8
	}{
		{"OPEN claims another node", x, func(r *rawPeer) { r.openAs(x, b, func(o *Open) { o.NodeID = "a" }) }, CodeOpen, SubOpenBadPeer},
		{"OPEN claims another network", a, func(r *rawPeer) { r.openAs(a, b, func(o *Open) { o.Network = "other.example.net" }) }, CodeOpen, SubOpenBadNetwork},
		{"a token stolen from another node", x, func(r *rawPeer) { r.openAs(x, b, func(o *Open) { o.Token = aTok }) }, CodeOpen, SubOpenAuth},
		{"a token for another audience", a, func(r *rawPeer) { r.openAs(a, b, func(o *Open) { o.Token = otherAud }) }, CodeOpen, SubOpenAuth},
		{"an unbound token", a, func(r *rawPeer) { r.openAs(a, b, func(o *Open) { o.Token = unbound }) }, CodeOpen, SubOpenAuth},
		{"an expired token", late, func(r *rawPeer) { r.openAs(late, b, func(o *Open) { o.Token = expired }) }, CodeOpen, SubOpenAuth},
		{"a role it does not have", a, func(r *rawPeer) { r.openAs(a, b, func(o *Open) { o.Role = RoleProvider }) }, CodeOpen, SubOpenRole},
		{"a hold time of 2s", a, func(r *rawPeer) { r.openAs(a, b, func(o *Open) { o.HoldTime = 2 }) }, CodeOpen, SubOpenHoldTime},
		{"an OPEN that is not CBOR", a, func(r *rawPeer) { r.write(AppendFrame(nil, MsgOpen, []byte("{not cbor}"))) }, CodeOpen, SubOpenMalformed},
		{"an UPDATE before OPEN", a, func(r *rawPeer) { r.send(MsgUpdate, Update{Payload: []byte("x")}) }, CodeFSM, SubFSMOpenSent},
		{"garbage", a, func(r *rawPeer) { r.write([]byte("GET / HTTP/1.1\r\n\r\n")) }, CodeHeader, SubNotSynchronized},
		{"a frame over the limit", a, func(r *rawPeer) {
			r.write([]byte{0x4B, 0x4D, FrameVersion, byte(MsgUpdate), 0, 1, 0, 1})
		}, CodeHeader, SubBadLength},
		{"an unknown frame version", a, func(r *rawPeer) { r.write([]byte{0x4B, 0x4D, 9, byte(MsgOpen), 0, 0, 0, 1, 0}) }, CodeHeader, SubBadVersion},
		{"an unknown message type", a, func(r *rawPeer) { r.write([]byte{0x4B, 0x4D, FrameVersion, 77, 0, 0, 0, 1, 0}) }, CodeHeader, SubBadType},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.status(t, c.as.id)
			r, err := m.raw(c.as, b, fmt.Sprintf("10.1.0.%d", i))
			must(t, err)
			c.do(r)
			n := r.notification()
			if n.Code != c.code || n.Subcode != c.sub {
				t.Fatalf("refused with %s, want %d/%d", n, c.code, c.sub)
			}
			r.closed()
			if st := b.status(t, c.as.id); st.Established != before.Established {
				t.Fatalf("a session was established: %+v", st)
			}
		})
	}
	// A token shown on one connection is refused on the next.
	t.Run("a token replayed on another connection", func(t *testing.T) {
		r1, err := m.raw(a, b, "10.2.0.1")
		must(t, err)
		o := r1.openAs(a, b, nil)
		r1.expect(MsgKeepalive)
		r1.tc.Close()
		r2, err := m.raw(a, b, "10.2.0.2")
		must(t, err)
		r2.send(MsgOpen, o)
		if n := r2.notification(); n.Code != CodeOpen || n.Subcode != SubOpenReplay {
			t.Fatalf("replayed token: %s", n)
		}
	})
}

// TestReplayCache: a token is remembered until the time given (its exp
// plus the verifier's skew, by the speaker); a full cache drops what
// expired and, still full, refuses.
func TestReplayCache(t *testing.T) {
	now := time.Now()
	r := newReplayCache(2)
	if fresh, _ := r.first("j1", now.Add(time.Minute), now); !fresh {
		t.Fatal("a new token is not fresh")
	}
	if fresh, _ := r.first("j1", now.Add(time.Minute), now.Add(59*time.Second)); fresh {
		t.Fatal("a token shown twice within its time is fresh")
	}
	if fresh, _ := r.first("j2", now.Add(time.Second), now); !fresh {
		t.Fatal("j2")
	}
	if _, full := r.first("j3", now.Add(time.Minute), now); !full {
		t.Fatal("a third token in a cache of two was taken")
	}
	if fresh, full := r.first("j3", now.Add(time.Minute), now.Add(2*time.Second)); !fresh || full {
		t.Fatal("a full cache did not drop the expired j2")
	}
}
