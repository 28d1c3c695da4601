package agent_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// fwCall is one Trust call of the follower to a fake root server; the test
// answers it.
type fwCall struct {
	server string
	index  uint64
	wait   time.Duration
	reply  chan fwReply
}

type fwReply struct {
	doc trust.Delta
	err error
}

// fwRoots are fake root servers and a fake timer source: every Trust call
// and every pause of the follower shows up on a channel for the test.
type fwRoots struct {
	t      *testing.T
	calls  chan fwCall
	pauses chan fwPause
	stop   chan struct{}

	mu     sync.Mutex
	now    time.Time
	dialed []string
	closed int
}

type fwPause struct {
	d    time.Duration
	fire chan time.Time
}

type fwSource struct {
	r      *fwRoots
	server string
}

func (s fwSource) Trust(ctx context.Context, index uint64, wait time.Duration, full bool) (trust.Delta, error) {
	c := fwCall{server: s.server, index: index, wait: wait, reply: make(chan fwReply, 1)}
	select {
	case s.r.calls <- c:
	case <-ctx.Done():
		return trust.Delta{}, ctx.Err()
	}
	select {
	case rep := <-c.reply:
		return rep.doc, rep.err
	case <-ctx.Done():
		return trust.Delta{}, ctx.Err()
	}
}

func (s fwSource) Close() {
	s.r.mu.Lock()
	s.r.closed++
	s.r.mu.Unlock()
}

func newFWRoots(t *testing.T) *fwRoots {
	r := &fwRoots{t: t, calls: make(chan fwCall), pauses: make(chan fwPause), stop: make(chan struct{}),
		now: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)}
	t.Cleanup(func() { close(r.stop) })
	return r
}

func (r *fwRoots) dial(server string) (agent.TrustSource, error) {
	r.mu.Lock()
	r.dialed = append(r.dialed, server)
	r.mu.Unlock()
	return fwSource{r: r, server: server}, nil
}

func (r *fwRoots) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *fwRoots) after(d time.Duration) <-chan time.Time {
	p := fwPause{d: d, fire: make(chan time.Time, 1)}
	select {
	case r.pauses <- p:
	case <-r.stop:
	}
	return p.fire
}

// call waits for the follower's next Trust call.
func (r *fwRoots) call() fwCall {
	r.t.Helper()
	select {
	case c := <-r.calls:
		return c
	case p := <-r.pauses:
		r.t.Fatalf("follower paused %s where a call was expected", p.d)
	case <-time.After(10 * time.Second):
		r.t.Fatal("follower made no call")
	}
	return fwCall{}
}

// pause waits for the follower's next pause, checks its length and ends it.
func (r *fwRoots) pause(want time.Duration) {
	r.t.Helper()
	r.pauseWithin(want, want)
}

// pauseWithin is pause for a length in [lo, hi].
func (r *fwRoots) pauseWithin(lo, hi time.Duration) {
	r.t.Helper()
	want := lo
	select {
	case p := <-r.pauses:
		if p.d < lo || p.d > hi {
			r.t.Fatalf("follower paused %s, want %s..%s", p.d, lo, hi)
		}
		r.mu.Lock()
		r.now = r.now.Add(p.d)
		r.mu.Unlock()
		p.fire <- r.clock()
	case c := <-r.calls:
		r.t.Fatalf("follower called %s (index %d) where a pause of %s was expected", c.server, c.index, want)
	case <-time.After(10 * time.Second):
		r.t.Fatal("follower did not pause")
	}
}

// fwDoc is a trust document at index naming root servers by API address.
func fwDoc(index uint64, servers ...string) trust.Delta {
	d := trust.Delta{Index: index, Network: network, Reset: true}
	for i, s := range servers {
		d.Put.Servers = append(d.Put.Servers, fsm.Server{Name: "r" + string(rune('1'+i)), APIAddr: s, Status: "voter"})
	}
	return d
}

// runFollower starts f.Run and returns a function that stops it and
// returns Run's result.
func runFollower(t *testing.T, f *agent.Follower) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { stop() })
	return stop
}

func newFWFollower(t *testing.T, r *fwRoots, dir string, cfg agent.FollowerConfig) *agent.Follower {
	t.Helper()
	cfg.DataDir, cfg.Network, cfg.Dial, cfg.Clock, cfg.After = dir, network, r.dial, r.clock, r.after
	if cfg.Servers == nil {
		cfg.Servers = []string{"a:1"}
	}
	f, err := agent.NewFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFollowerResumesFailsOverAndBacksOff drives the follower through fake
// root servers: it resumes from the last index it holds, learns the other
// servers from the document, leaves a failing server for the next at once,
// pauses after each full round of failures with a doubling, capped pause,
// and starts over once a server answers.
func TestFollowerResumesFailsOverAndBacksOff(t *testing.T) {
	r := newFWRoots(t)
	dir := t.TempDir()
	var changes []uint64
	f := newFWFollower(t, r, dir, agent.FollowerConfig{Wait: 7 * time.Second, MinBackoff: time.Second, MaxBackoff: 4 * time.Second,
		OnChange: func(prev, cur *trust.State) { changes = append(changes, cur.Index()) }})
	stop := runFollower(t, f)

	c := r.call()
	if c.server != "a:1" || c.index != 0 || c.wait != 7*time.Second {
		t.Fatalf("first call %+v", c)
	}
	c.reply <- fwReply{doc: fwDoc(5, "a:1", "b:2", "c:3")}
	c = r.call()
	if c.server != "a:1" || c.index != 5 {
		t.Fatalf("second call to %s at index %d, want a:1 at 5", c.server, c.index)
	}
	// An older answer (a replica behind) changes nothing.
	c.reply <- fwReply{doc: fwDoc(4, "a:1")}
	r.pause(time.Second) // an answer without news, at once: paced
	c = r.call()
	if c.index != 5 {
		t.Fatalf("resumed from %d after an older answer, want 5", c.index)
	}
	// a fails: b and c are tried at once, then a pause; rounds double the
	// pause up to the cap.
	fail := func(server string) {
		t.Helper()
		c = r.call()
		if c.server != server || c.index != 5 {
			t.Fatalf("call to %s at %d, want %s at 5", c.server, c.index, server)
		}
		c.reply <- fwReply{err: errors.New("connection refused")}
	}
	c.reply <- fwReply{err: errors.New("connection refused")}
	fail("b:2")
	fail("c:3")
	r.pause(time.Second)
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		fail("a:1")
		fail("b:2")
		fail("c:3")
		r.pause(want)
	}
	st := f.Status()
	if st.Failures != 12 || !strings.Contains(st.LastError, "refused") || st.Index != 5 {
		t.Fatalf("status after failures %+v", st)
	}
	// b answers with news: the failures are over.
	fail("a:1")
	c = r.call()
	if c.server != "b:2" {
		t.Fatalf("call to %s, want b:2", c.server)
	}
	c.reply <- fwReply{doc: fwDoc(9, "a:1", "b:2", "c:3")}
	c = r.call()
	if c.server != "b:2" || c.index != 9 {
		t.Fatalf("after recovery: call to %s at %d, want b:2 at 9", c.server, c.index)
	}
	st = f.Status()
	if st.Failures != 0 || st.LastError != "" || st.Server != "b:2" || st.LastContact.IsZero() {
		t.Fatalf("status after recovery %+v", st)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(changes) != 2 || changes[0] != 5 || changes[1] != 9 {
		t.Fatalf("OnChange saw %v, want [5 9]", changes)
	}
	doc, err := agent.ReadTrustFile(dir, network)
	if err != nil || doc.Index != 9 {
		t.Fatalf("persisted index %d, %v", doc.Index, err)
	}
}

// TestFollowerHonoursRetryAfter: a root whose blocking queries are at
// their cap answers 429 with Retry-After; the follower tries the other
// roots at once, and when every root turned it away it comes back no
// sooner than the Retry-After (spread by up to half of it), then follows
// again.
func TestFollowerHonoursRetryAfter(t *testing.T) {
	r := newFWRoots(t)
	f := newFWFollower(t, r, t.TempDir(), agent.FollowerConfig{Servers: []string{"a:1", "b:2", "c:3"}, MinBackoff: time.Second})
	runFollower(t, f)
	full := &api.APIError{Status: http.StatusTooManyRequests, Code: api.CodeTooMany, RetryAfter: 4 * time.Second}
	for _, server := range []string{"a:1", "b:2", "c:3"} {
		c := r.call()
		if c.server != server {
			t.Fatalf("call to %s, want %s", c.server, server)
		}
		if server == "b:2" {
			c.reply <- fwReply{err: errors.New("connection refused")}
			continue
		}
		c.reply <- fwReply{err: full}
	}
	r.pauseWithin(4*time.Second, 6*time.Second)
	c := r.call()
	if c.server != "a:1" || c.index != 0 {
		t.Fatalf("retry call %+v, want a:1 at 0", c)
	}
	c.reply <- fwReply{doc: fwDoc(7, "a:1", "b:2", "c:3")}
	if c = r.call(); c.index != 7 {
		t.Fatalf("after the retry: index %d, want 7", c.index)
	}
	// Without a 429 in the round, the pause is the plain backoff again.
	for _, server := range []string{"a:1", "b:2", "c:3"} {
		if server != "a:1" {
			c = r.call()
		}
		if c.server != server {
			t.Fatalf("call to %s, want %s", c.server, server)
		}
		c.reply <- fwReply{err: errors.New("connection refused")}
	}
	r.pause(time.Second)
}

// TestFollowerRefusesOtherNetwork: a server answering for another network
// is a failing server; its document is not taken.
func TestFollowerRefusesOtherNetwork(t *testing.T) {
	r := newFWRoots(t)
	f := newFWFollower(t, r, t.TempDir(), agent.FollowerConfig{Servers: []string{"a:1", "b:2"}, MinBackoff: time.Second})
	runFollower(t, f)
	c := r.call()
	other := fwDoc(3)
	other.Network = "other.example"
	c.reply <- fwReply{doc: other}
	c = r.call()
	if c.server != "b:2" || c.index != 0 || f.Current() != nil {
		t.Fatalf("after a foreign document: call to %s at %d, current %v", c.server, c.index, f.Current())
	}
	if st := f.Status(); !strings.Contains(st.LastError, "another network") {
		t.Fatalf("last error %q", st.LastError)
	}
	c.reply <- fwReply{doc: fwDoc(3)}
	if c = r.call(); c.index != 3 {
		t.Fatalf("resumed from %d, want 3", c.index)
	}
}

// TestFollowerRefresh: Refresh asks at once (index 0, no wait) and takes a
// newer document; it fails over within its timeout.
func TestFollowerRefresh(t *testing.T) {
	r := newFWRoots(t)
	f := newFWFollower(t, r, t.TempDir(), agent.FollowerConfig{Servers: []string{"a:1", "b:2"}})
	done := make(chan error, 1)
	go func() { done <- f.Refresh(context.Background()) }()
	c := r.call()
	if c.server != "a:1" || c.index != 0 || c.wait != 0 {
		t.Fatalf("refresh call %+v", c)
	}
	c.reply <- fwReply{err: errors.New("connection refused")}
	c = r.call()
	if c.server != "b:2" || c.wait != 0 {
		t.Fatalf("refresh failover call %+v", c)
	}
	c.reply <- fwReply{doc: fwDoc(12, "a:1", "b:2")}
	if err := <-done; err != nil || f.Index() != 12 {
		t.Fatalf("refresh: %v, index %d", err, f.Index())
	}
	go func() { done <- f.Refresh(context.Background()) }()
	for range 2 {
		c = r.call()
		c.reply <- fwReply{err: errors.New("connection refused")}
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("refresh with no server answering: %v", err)
	}
}

// TestFollowerStartsFromTrustFile: a follower starts from trust.json at
// once and resumes from its index; a damaged trust.json is ignored.
func TestFollowerStartsFromTrustFile(t *testing.T) {
	dir := t.TempDir()
	if err := agent.WriteTrustFile(dir, fwDoc(41, "b:2")); err != nil {
		t.Fatal(err)
	}
	r := newFWRoots(t)
	f := newFWFollower(t, r, dir, agent.FollowerConfig{})
	if f.Index() != 41 {
		t.Fatalf("index %d after start, want 41 from trust.json", f.Index())
	}
	if st := f.Status(); len(st.Servers) != 2 || st.Servers[1] != "b:2" || !st.LastContact.IsZero() {
		t.Fatalf("status %+v", st)
	}
	runFollower(t, f)
	if c := r.call(); c.index != 41 {
		t.Fatalf("first call at index %d, want 41", c.index)
	}

	bad := t.TempDir()
	if err := os.WriteFile(agent.TrustPath(bad), []byte(`{"version":1,"trust":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := newFWFollower(t, newFWRoots(t), bad, agent.FollowerConfig{}); f.Index() != 0 || f.Current() != nil {
		t.Fatalf("damaged trust.json taken: index %d", f.Index())
	}
	if _, err := agent.ReadTrustFile(t.TempDir(), network); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("absent trust.json: %v", err)
	}
}

// TestTrustFileBadInput: trust.json that is not what the follower wrote is
// refused with ErrTrustFile.
func TestTrustFileBadInput(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"empty", ``},
		{"garbage", `not json`},
		{"truncated", `{"version":1,"trust":{"index":3,`},
		{"version 3", `{"version":3,"trust":{"index":3,"network":"agent.example","reset":true}}`},
		{"version 2 not a full document", `{"version":2,"trust":{"index":3,"network":"agent.example","since":2,"put":{},"deleted":{}}}`},
		{"no version", `{"trust":{"index":3,"network":"agent.example"}}`},
		{"other network", `{"version":1,"trust":{"index":3,"network":"other.example"}}`},
		{"index 0", `{"version":1,"trust":{"index":0,"network":"agent.example"}}`},
		{"unknown field", `{"version":1,"extra":1,"trust":{"index":3,"network":"agent.example"}}`},
		{"trailing data", `{"version":1,"trust":{"index":3,"network":"agent.example"}} {}`},
		{"wrong type", `{"version":"1","trust":{"index":3,"network":"agent.example"}}`},
		{"array", `[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(agent.TrustPath(dir), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := agent.ReadTrustFile(dir, network); !errors.Is(err, agent.ErrTrustFile) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}

func TestFollowerConfig(t *testing.T) {
	r := newFWRoots(t)
	for _, tc := range []struct {
		name string
		cfg  agent.FollowerConfig
		want string
	}{
		{"no dir", agent.FollowerConfig{Network: network, Dial: r.dial}, "data directory"},
		{"no network", agent.FollowerConfig{DataDir: "d", Dial: r.dial}, "network"},
		{"no dial", agent.FollowerConfig{DataDir: "d", Network: network}, "Dial"},
		{"negative", agent.FollowerConfig{DataDir: "d", Network: network, Dial: r.dial, Wait: -1}, "negative"},
		{"backoff", agent.FollowerConfig{DataDir: "d", Network: network, Dial: r.dial, MinBackoff: time.Minute, MaxBackoff: time.Second}, "above its cap"},
	} {
		if _, err := agent.NewFollower(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}
