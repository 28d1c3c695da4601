package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
)

// t0 is the fake clock's start.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeTime is a clock and a timer source that the test drives: every wait
// of the Renewer shows up on waits, and passes when the test fires it.
type fakeTime struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
	stop  chan struct{} // closed when the test ends: waits nobody takes
}

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeTime(t *testing.T) *fakeTime {
	f := &fakeTime{now: t0, waits: make(chan fakeWait), stop: make(chan struct{})}
	t.Cleanup(func() { close(f.stop) })
	return f
}

func (f *fakeTime) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeTime) set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func (f *fakeTime) After(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, fire: make(chan time.Time, 1)}
	select {
	case f.waits <- w:
	case <-f.stop:
	}
	return w.fire
}

// renewCall is one call of the fake Renew: the test answers it.
type renewCall struct {
	dir   string
	reply chan renewReply
}

type renewReply struct {
	cert *x509.Certificate
	err  error
}

// harness runs a Renewer with the fakes and reports its end on done.
type harness struct {
	t      *testing.T
	ft     *fakeTime
	calls  chan renewCall
	done   chan error
	cancel context.CancelFunc
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// step bounds how long the test waits for the Renewer to act; it is a
// deadline for a failing test, not a synchronisation.
const step = 10 * time.Second

// nodeCert makes a certificate of node n1 valid from notBefore for life.
func nodeCert(t *testing.T, serial int64, notBefore time.Time, life time.Duration) *x509.Certificate {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://agent.example/node/n1")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore, NotAfter: notBefore.Add(life), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start writes cert as the node's certificate and runs a Renewer on it.
func start(t *testing.T, cert *x509.Certificate, cfg agent.RenewerConfig) *harness {
	t.Helper()
	dir := t.TempDir()
	if cert != nil {
		if err := ca.WriteCertsFile(agent.CertPath(dir), cert); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, ft: newFakeTime(t), calls: make(chan renewCall), done: make(chan error, 1), logs: &syncBuffer{}}
	cfg.DataDir = dir
	cfg.Clock, cfg.After = h.ft.Now, h.ft.After
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: h.logs, Level: hclog.Debug, JSONFormat: true})
	cfg.Renew = func(ctx context.Context, dir string) (*x509.Certificate, error) {
		c := renewCall{dir: dir, reply: make(chan renewReply)}
		select {
		case h.calls <- c:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r := <-c.reply
		return r.cert, r.err
	}
	r, err := agent.NewRenewer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(cancel)
	go func() { h.done <- r.Run(ctx) }()
	return h
}

// wait expects the Renewer to wait d, moves the clock by d and lets the
// wait pass.
func (h *harness) wait(d time.Duration) {
	h.t.Helper()
	h.waitUntil(d, time.Time{})
}

// waitUntil expects a wait of d, sets the clock to until (zero: d later)
// and lets the wait pass.
func (h *harness) waitUntil(d time.Duration, until time.Time) {
	h.t.Helper()
	select {
	case w := <-h.ft.waits:
		if w.d != d {
			h.t.Fatalf("renewer waits %s, want %s", w.d, d)
		}
		if until.IsZero() {
			until = h.ft.Now().Add(d)
		}
		h.ft.set(until)
		w.fire <- until
	case err := <-h.done:
		h.t.Fatalf("renewer stopped (%v), want a wait of %s", err, d)
	case <-time.After(step):
		h.t.Fatalf("renewer did not wait %s", d)
	}
}

// cancelDuring expects a wait of d and cancels Run's context during it.
func (h *harness) cancelDuring(d time.Duration) {
	h.t.Helper()
	select {
	case w := <-h.ft.waits:
		if w.d != d {
			h.t.Fatalf("renewer waits %s, want %s", w.d, d)
		}
		h.cancel()
	case <-time.After(step):
		h.t.Fatalf("renewer did not wait %s", d)
	}
}

// renew expects a renewal and answers it.
func (h *harness) renew(cert *x509.Certificate, err error) {
	h.t.Helper()
	select {
	case c := <-h.calls:
		c.reply <- renewReply{cert, err}
	case w := <-h.ft.waits:
		h.t.Fatalf("renewer waits %s, want a renewal", w.d)
	case err := <-h.done:
		h.t.Fatalf("renewer stopped (%v), want a renewal", err)
	case <-time.After(step):
		h.t.Fatal("renewer did not renew")
	}
}

// end expects Run to return.
func (h *harness) end() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case w := <-h.ft.waits:
		h.t.Fatalf("renewer waits %s, want it to stop", w.d)
	case <-h.calls:
		h.t.Fatal("renewer renews, want it to stop")
	case <-time.After(step):
		h.t.Fatal("renewer did not stop")
	}
	return nil
}

var noChunks = agent.RenewerConfig{MaxWait: 1000 * time.Hour}

func TestRenewerRenewsAtTwoThirds(t *testing.T) {
	first := nodeCert(t, 1, t0, 3*time.Hour)
	h := start(t, first, noChunks)
	h.wait(2 * time.Hour)
	second := nodeCert(t, 2, t0.Add(2*time.Hour), 3*time.Hour)
	h.renew(second, nil)
	h.wait(2 * time.Hour) // two thirds of the new certificate, from its NotBefore
	third := nodeCert(t, 3, t0.Add(4*time.Hour), 30*time.Minute)
	h.renew(third, nil)
	h.cancelDuring(20 * time.Minute)
	if err := h.end(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	logs := h.logs.String()
	for _, want := range []string{`"@message":"renewed the node certificate"`, `"serial":"2"`, `"serial":"3"`, `"node":"n1"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Errorf("logs hold a key:\n%s", logs)
	}
}

// TestRenewerLongWaitInSteps: a long wait is cut into MaxWait steps, and a
// clock that jumps past the renewal time is noticed after one step.
func TestRenewerLongWaitInSteps(t *testing.T) {
	h := start(t, nodeCert(t, 1, t0, 3*time.Hour), agent.RenewerConfig{MaxWait: time.Minute})
	h.wait(time.Minute)
	h.waitUntil(time.Minute, t0.Add(150*time.Minute)) // the machine slept during this wait
	h.renew(nodeCert(t, 2, h.ft.Now(), 3*time.Hour), nil)
	h.wait(time.Minute)
}

// TestRenewerDueAtStart: a certificate past its renewal time (the agent was
// down) is renewed at once.
func TestRenewerDueAtStart(t *testing.T) {
	h := start(t, nodeCert(t, 1, t0.Add(-150*time.Minute), 3*time.Hour), noChunks)
	h.renew(nodeCert(t, 2, t0, 3*time.Hour), nil)
	h.wait(2 * time.Hour)
}

func TestRenewerBacksOffAndRecovers(t *testing.T) {
	h := start(t, nodeCert(t, 1, t0, 3*time.Hour), agent.RenewerConfig{MaxWait: 1000 * time.Hour, MinBackoff: time.Second, MaxBackoff: 5 * time.Second})
	h.wait(2 * time.Hour)
	unavailable := &api.APIError{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "no leader"}
	for _, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		h.renew(nil, unavailable)
		h.wait(backoff)
	}
	h.renew(nil, errors.New("dial tcp: connection refused"))
	h.wait(5 * time.Second)
	renewedAt := h.ft.Now()
	h.renew(nodeCert(t, 2, renewedAt, 3*time.Hour), nil)
	h.wait(2 * time.Hour)
	// After a success the backoff starts again from its floor.
	h.renew(nil, unavailable)
	h.wait(time.Second)
	if logs := h.logs.String(); !strings.Contains(logs, `"failures":6`) || !strings.Contains(logs, `"retry_in":"5s"`) {
		t.Errorf("logs of the retries:\n%s", logs)
	}
}

// TestRenewerDefaultBackoff: the first retry waits 1s and the cap is 5m.
func TestRenewerDefaultBackoff(t *testing.T) {
	h := start(t, nodeCert(t, 1, t0, 300*time.Hour), noChunks)
	h.wait(200 * time.Hour)
	want := time.Second
	for range 10 {
		h.renew(nil, errors.New("timeout"))
		h.wait(want)
		want = min(2*want, 5*time.Minute)
	}
	if want != 5*time.Minute {
		t.Fatalf("backoff after 10 failures %s, want the 5m cap", want)
	}
}

func TestRenewerStops(t *testing.T) {
	revoked := &api.APIError{Status: http.StatusForbidden, Code: api.CodeNodeRevoked, Message: `node "n1" is revoked and cannot renew; register it again under a new id`}
	keyRevoked := &api.APIError{Status: http.StatusForbidden, Code: api.CodeKeyRevoked, Message: "the key is revoked"}
	// What the code says decides, never the message.
	saysRevoked := &api.APIError{Status: http.StatusForbidden, Code: api.CodeForbidden, Message: `node "n1" is revoked`}
	notCurrent := &api.APIError{Status: http.StatusForbidden, Code: "forbidden", Message: "this certificate is neither the node's current nor its previous one; renew with the newest, or register the node again"}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"revoked", fmt.Errorf("agent: renewal refused: %w", revoked), agent.ErrRevoked},
		{"key revoked", keyRevoked, agent.ErrRevoked},
		{"refused", notCurrent, agent.ErrRenewRefused},
		{"refused, whatever the message says", saysRevoked, agent.ErrRenewRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, nodeCert(t, 1, t0, 3*time.Hour), noChunks)
			h.wait(2 * time.Hour)
			h.renew(nil, tc.err)
			err := h.end()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
				t.Fatalf("Run: %v does not carry the API error", err)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		h := start(t, nodeCert(t, 1, t0, 3*time.Hour), agent.RenewerConfig{MaxWait: 1000 * time.Hour, MinBackoff: 30 * time.Minute, MaxBackoff: 30 * time.Minute})
		h.wait(2 * time.Hour)
		h.renew(nil, errors.New("connection refused"))
		h.wait(30 * time.Minute)
		h.renew(nil, errors.New("connection refused"))
		h.wait(30 * time.Minute) // now at NotAfter
		h.renew(nil, errors.New("certificate expired"))
		if err := h.end(); !errors.Is(err, agent.ErrExpired) {
			t.Fatalf("Run: %v, want ErrExpired", err)
		}
	})
	t.Run("cancel during renewal", func(t *testing.T) {
		h := start(t, nodeCert(t, 1, t0, 3*time.Hour), noChunks)
		h.wait(2 * time.Hour)
		select {
		case c := <-h.calls:
			h.cancel()
			c.reply <- renewReply{nil, context.Canceled}
		case <-time.After(step):
			t.Fatal("no renewal")
		}
		if err := h.end(); err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	})
}

func TestRenewerConfigAndDataDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  agent.RenewerConfig
		want string
	}{
		{"no data dir", agent.RenewerConfig{}, "data directory"},
		{"negative backoff", agent.RenewerConfig{DataDir: "d", MinBackoff: -time.Second}, "negative"},
		{"negative max wait", agent.RenewerConfig{DataDir: "d", MaxWait: -time.Second}, "negative"},
		{"floor above cap", agent.RenewerConfig{DataDir: "d", MinBackoff: time.Hour, MaxBackoff: time.Minute}, "above its cap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.NewRenewer(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewRenewer: %v, want an error about %q", err, tc.want)
			}
		})
	}

	// No node in the directory.
	r, err := agent.NewRenewer(agent.RenewerConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); !errors.Is(err, agent.ErrNoNode) {
		t.Fatalf("Run without a node: %v, want ErrNoNode", err)
	}
	// A node whose registration is pending: no certificate yet.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"version":1,"node_id":"n1","status":"pending"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, _ = agent.NewRenewer(agent.RenewerConfig{DataDir: dir})
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "keymesh node join --resume --data-dir") {
		t.Fatalf("Run without a certificate: %v", err)
	}
}
