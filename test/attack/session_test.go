package attack

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/session"
	"github.com/keymesh/keymesh/test/harness"
)

// peerConn is an attacker's session connection to an agent: TLS 1.3 with
// a node's certificate, then frames by hand.
type peerConn struct {
	t  *testing.T
	tc *tls.Conn
	fr *session.FrameReader
}

// dialPeer connects to addr from source src as n (TLS done). It verifies
// the agent's certificate against the CA file (a node certificate names a
// SPIFFE ID, not a host, so the chain is checked by hand).
func dialPeer(t *testing.T, c *harness.Cluster, addr, src string, n node) (*peerConn, error) {
	t.Helper()
	roots, err := ca.ReadCertsFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cert := n.tls
	tc := tls.Client(nc, &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{session.ALPN},
		// Presented whatever roots the node says it accepts (crypto/tls
		// would send none it does not).
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		// Checked below against the CA, never skipped.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, x := range cs.PeerCertificates[1:] {
				inter.AddCert(x)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		}})
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	return &peerConn{t: t, tc: tc, fr: session.NewFrameReader(tc, session.DefaultMaxFrame)}, nil
}

func (p *peerConn) write(b []byte) {
	p.t.Helper()
	if _, err := p.tc.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peerConn) send(t session.MsgType, m any) {
	p.t.Helper()
	body, err := session.Encode(m)
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(session.AppendFrame(nil, t, body))
}

// notification reads until the agent's NOTIFICATION.
func (p *peerConn) notification() session.Notification {
	p.t.Helper()
	for {
		f, err := p.fr.Read()
		if err != nil {
			p.t.Fatalf("the agent closed without a NOTIFICATION: %v", err)
		}
		if f.Type == session.MsgNotification {
			n, err := session.DecodeNotification(f.Body)
			if err != nil {
				p.t.Fatal(err)
			}
			return n
		}
	}
}

// token mints an OPEN token under n's key for aud, bound to bind (nil:
// unbound), at clock now.
func (n node) token(t *testing.T, aud string, bind *x509.Certificate, now time.Time) string {
	t.Helper()
	m, err := identity.NewMinter(identity.MinterConfig{Key: n.key, Cert: n.chain[0], Chain: n.chain[1:],
		Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := m.Mint(identity.MintRequest{Audience: []string{aud}, TTL: time.Minute, Principal: identity.PrincipalNode, BindCert: bind})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// shortToken mints a bound OPEN token of the shortest lifetime a minter
// makes, and returns when it expires.
func (n node) shortToken(t *testing.T, aud string) (string, time.Time) {
	t.Helper()
	m, err := identity.NewMinter(identity.MinterConfig{Key: n.key, Cert: n.chain[0], Chain: n.chain[1:], MinLifetime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tok, claims, err := m.Mint(identity.MintRequest{Audience: []string{aud}, TTL: 2 * time.Second, Principal: identity.PrincipalNode, BindCert: n.chain[0]})
	if err != nil {
		t.Fatal(err)
	}
	return tok, claims.Expiry
}

// refusedTLS dials like dialPeer and reports why the agent refused the
// connection: in TLS 1.3 the client's side of the handshake completes
// before the server has checked the client's certificate, so a refusal
// shows as the first read failing where an accepted peer reads the
// agent's OPEN. nil means it was accepted.
func refusedTLS(t *testing.T, c *harness.Cluster, addr, src string, n node) error {
	t.Helper()
	p, err := dialPeer(t, c, addr, src, n)
	if err != nil {
		return err
	}
	p.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.fr.Read(); err != nil {
		return err
	}
	return nil
}

// agentMetric reads one series of an agent's metrics (0 when absent).
func agentMetric(t *testing.T, a *harness.Agent, series string) int {
	t.Helper()
	return a.Metric(t, series)
}

// TestPeeringAttacks: what an attacker with network access, with a node's
// key, or with a token it stole, may try on an agent's session listener.
// Each is refused with a reason (a NOTIFICATION or a failed handshake, a
// log line and a counter), the agent keeps running, and its session with
// an honest peer does not blink.
func TestPeeringAttacks(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	mesh := c.StartMesh(2)
	target, honest := mesh[0], mesh[1]
	c.WaitEstablished(target, 1, time.Minute)
	c.WaitEstablished(honest, 1, time.Minute)
	ctx := ctxT(t, 5*time.Minute)
	res, err := target.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr, honestBefore := res.Listen, res.Peers[0]
	targetID := identity.SPIFFEID{Network: c.Network, Kind: identity.KindNode, Name: target.Name}.String()
	x := join(t, c, "mallory", "NODE")
	a := loadNode(t, honest.Name, honest.Dir)
	// A token that expires during the test (the shortest a minter makes).
	shortLived, shortExpiry := x.shortToken(t, targetID)
	src := 10 // each attempt from its own loopback address: the rate per source is a test of its own
	dial := func(n node) *peerConn {
		t.Helper()
		src++
		p, err := dialPeer(t, c, addr, fmt.Sprintf("127.0.0.%d", src), n)
		if err != nil {
			t.Fatalf("TLS as %s: %v", n.id, err)
		}
		return p
	}
	open := func(n node, tok string) session.Open {
		return session.Open{NodeID: n.id, Network: c.Network, HoldTime: 30, Token: tok}
	}
	failures := func(reason string) int {
		return agentMetric(t, target, `keymesh_session_handshake_failures_total{reason="`+reason+`"}`)
	}

	t.Run("a token stolen from another node's session", func(t *testing.T) {
		stolen := a.token(t, targetID, a.chain[0], time.Now()) // bound to the honest node's certificate
		p := dial(x)
		p.send(session.MsgOpen, open(x, stolen))
		if n := p.notification(); n.Code != session.CodeOpen || n.Subcode != session.SubOpenAuth {
			t.Fatalf("refused with %s, want open/authentication", n)
		}
	})
	t.Run("an OPEN claiming the certificate's owner is someone else", func(t *testing.T) {
		p := dial(x)
		p.send(session.MsgOpen, open(a, x.token(t, targetID, x.chain[0], time.Now())))
		if n := p.notification(); n.Subcode != session.SubOpenBadPeer {
			t.Fatalf("refused with %s, want open/bad-peer", n)
		}
	})
	t.Run("a token shown twice", func(t *testing.T) {
		tok := x.token(t, targetID, x.chain[0], time.Now())
		p := dial(x)
		p.send(session.MsgOpen, open(x, tok))
		if f, err := p.fr.Read(); err != nil || f.Type != session.MsgOpen {
			t.Fatalf("the first showing: %v %v", f.Type, err)
		}
		p.tc.Close()
		q := dial(x)
		q.send(session.MsgOpen, open(x, tok))
		if n := q.notification(); n.Subcode != session.SubOpenReplay {
			t.Fatalf("refused with %s, want open/replay", n)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("the agent's log:\n%s", target.Log())
		}
	}()
	t.Run("an unbound token", func(t *testing.T) {
		tok := x.token(t, targetID, nil, time.Now())
		p := dial(x)
		p.send(session.MsgOpen, open(x, tok))
		if n := p.notification(); n.Subcode != session.SubOpenAuth {
			t.Fatalf("refused with %s, want open/authentication", n)
		}
	})
	t.Run("garbage, truncated and oversized frames", func(t *testing.T) {
		for _, c := range []struct {
			name string
			in   []byte
			sub  uint8
		}{
			{"garbage", []byte("\x16\x03\x01 GET / HTTP/1.1\r\n\r\n"), session.SubNotSynchronized},
			{"oversized", []byte{0x4B, 0x4D, session.FrameVersion, byte(session.MsgUpdate), 0x7F, 0, 0, 0}, session.SubBadLength},
			{"truncated", session.AppendFrame(nil, session.MsgOpen, []byte{0xA5, 0x01, 0x61})[:10:10], session.SubBadLength},
		} {
			p := dial(x)
			p.write(c.in)
			if c.name == "truncated" {
				p.tc.CloseWrite()
			}
			if n := p.notification(); n.Code != session.CodeHeader || n.Subcode != c.sub {
				t.Fatalf("%s: refused with %s, want header/%d", c.name, n, c.sub)
			}
		}
	})
	t.Run("UPDATE before OPEN", func(t *testing.T) {
		p := dial(x)
		p.send(session.MsgUpdate, session.Update{Payload: []byte("10.0.0.0/8")})
		if n := p.notification(); n.Code != session.CodeFSM {
			t.Fatalf("refused with %s, want fsm", n)
		}
	})
	t.Run("a peer that never sends OPEN", func(t *testing.T) {
		p := dial(x)
		start := time.Now()
		if n := p.notification(); n.Code != session.CodeHoldExpired {
			t.Fatalf("refused with %s, want hold-timer-expired", n)
		}
		if d := time.Since(start); d < 3*time.Second || d > 10*time.Second {
			t.Fatalf("closed after %s, want the 5s OPEN deadline", d)
		}
	})
	t.Run("a revoked node", func(t *testing.T) {
		r := join(t, c, "revoked-1", "NODE")
		if _, err := c.Client(c.Roots[0]).Revoke(ctx, api.RevokeRequest{Kind: "node", ID: r.id, Reason: "stolen"}); err != nil {
			t.Fatal(err)
		}
		c.WaitConverged(30 * time.Second)
		before := failures("revoked")
		// The agent learns of it within its blocking query; until it
		// refuses, try again.
		for deadline := time.Now().Add(10 * time.Second); ; {
			src++
			if refusedTLS(t, c, addr, fmt.Sprintf("127.0.0.%d", src), r) != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a revoked node still completes TLS with the agent 10s later")
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
		if failures("revoked") <= before {
			t.Fatal("the refusal of a revoked node was not counted")
		}
	})
	t.Run("a node of another network", func(t *testing.T) {
		o := harness.Start(t, bin, harness.Config{Servers: 1, Network: "other.keymesh.test"})
		stranger := loadNode(t, "stranger", o.JoinNode("stranger", api.CreateJoinTokenRequest{}))
		before := failures("network") + failures("chain")
		src++
		if refusedTLS(t, c, addr, fmt.Sprintf("127.0.0.%d", src), stranger) == nil {
			t.Fatal("a node of another network was accepted")
		}
		if failures("network")+failures("chain") <= before {
			t.Fatal("the refusal of a foreign node was not counted")
		}
	})
	t.Run("a flood of connections from one source", func(t *testing.T) {
		before := failures("rate")
		var conns []net.Conn
		for i := 0; i < 30; i++ {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				continue
			}
			conns = append(conns, conn)
		}
		// Those over the rate are closed at once: a read ends.
		refused := 0
		for _, conn := range conns {
			conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := conn.Read(make([]byte, 1)); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					refused++
				}
			}
			conn.Close()
		}
		if got := failures("rate") - before; got < 15 || refused < 15 {
			t.Fatalf("30 connections at once from one source: %d refused over the rate, want most of them", got)
		}
	})

	t.Run("an expired token", func(t *testing.T) {
		// Verifiers take a token up to 30 s past its exp (clock skew).
		until := shortExpiry.Add(31 * time.Second)
		for time.Now().Before(until) {
			time.Sleep(time.Until(until)) // the token's own clock
		}
		p := dial(x)
		p.send(session.MsgOpen, open(x, shortLived))
		if n := p.notification(); n.Subcode != session.SubOpenAuth || !strings.Contains(n.Reason, "expired") {
			t.Fatalf("refused with %s, want open/authentication (expired)", n)
		}
	})

	if !target.Running() {
		t.Fatalf("the agent stopped:\n%s", target.Log())
	}
	after, err := target.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after.Peers {
		if p.ID == honest.Name && (p.State != session.Established || p.Established != honestBefore.Established || !p.Since.Equal(honestBefore.Since)) {
			t.Fatalf("the honest session blinked: was %+v, is %+v", honestBefore, p)
		}
	}
	log := target.Log()
	for _, want := range []string{"peering OPEN refused", "peering handshake refused", "bad frame from a peer", "over the rate per source"} {
		if !strings.Contains(log, want) {
			t.Errorf("the agent's log does not say %q", want)
		}
	}
}
