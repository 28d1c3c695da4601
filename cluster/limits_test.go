package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
)

// TestSourceLimiterBounds: each address has its own bucket; past the
// address cap a new address is refused (not let in unmetered) until
// buckets refill and can be forgotten.
func TestSourceLimiterBounds(t *testing.T) {
	l := newSourceLimiter(1, 2, 2)
	now := time.Unix(1_900_000_000, 0)
	req := func(addr string) *http.Request {
		r := httptest.NewRequest("POST", "/", nil)
		r.RemoteAddr = addr
		return r
	}
	for i := 0; i < 2; i++ {
		if _, ok := l.allow(req("10.0.0.1:1000"), now, 1); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	wait, ok := l.allow(req("10.0.0.1:1001"), now, 1)
	if ok || wait <= 0 {
		t.Fatalf("third request of a burst of 2: ok=%v wait=%s", ok, wait)
	}
	if _, ok := l.allow(req("10.0.0.2:1000"), now, 1); !ok {
		t.Fatal("a second address shares the first one's bucket")
	}
	if _, ok := l.allow(req("10.0.0.3:1000"), now, 1); ok {
		t.Fatal("a third address was let in past the cap of 2 while both buckets carry debt")
	}
	later := now.Add(10 * time.Second)
	if _, ok := l.allow(req("10.0.0.3:1000"), later, 1); !ok {
		t.Fatal("once the buckets refilled, a new address is still refused")
	}
}

// TestSourceLimiterShare: with three root servers each takes a third of
// the per-source limit, so a client spreading over all of them gets the
// limit in all, not three times it.
func TestSourceLimiterShare(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	servers := []*sourceLimiter{newSourceLimiter(3, 9, 10), newSourceLimiter(3, 9, 10), newSourceLimiter(3, 9, 10)}
	r := httptest.NewRequest("POST", "/", nil)
	r.RemoteAddr = "10.0.0.1:1000"
	allowed := 0
	for round := 0; round < 20; round++ {
		for _, l := range servers {
			if _, ok := l.allow(r, now, 1.0/3); ok {
				allowed++
			}
		}
	}
	if allowed != 9 {
		t.Fatalf("a client spreading over 3 servers got %d requests at once, want the burst of 9", allowed)
	}
	allowed = 0
	later := now.Add(10 * time.Second)
	for round := 0; round < 200; round++ {
		for _, l := range servers {
			if _, ok := l.allow(r, later.Add(time.Duration(round)*50*time.Millisecond), 1.0/3); ok {
				allowed++
			}
		}
	}
	// 10 s of 3/s in all, plus the refilled burst of 9.
	if allowed < 9+25 || allowed > 9+31 {
		t.Fatalf("over 10 s a client spreading over 3 servers got %d, want about 3/s plus the burst", allowed)
	}
}

// TestServerLimits: headers over MaxHeaderBytes, a blocking query asking
// to wait longer than MaxWait, and a registration with too many DNS names.
func TestServerLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := testOptions(t)
	opts.Limits = Limits{MaxHeaderBytes: 4 << 10, MaxWait: 300 * time.Millisecond}
	srv, _, err := startBootstrap(ctx, BootstrapConfig{Network: "limits.example", Name: "r1", DataDir: filepath.Join(t.TempDir(), "r1"),
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	hc := apiClient(t, srv, adminCert(t, srv))

	req, _ := http.NewRequest("GET", "https://"+srv.APIAddr()+"/v1/sys/health", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 8<<10))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KiB header over a 4 KiB limit: %d", resp.StatusCode)
	}

	start := time.Now()
	resp, err = hc.Get("https://" + srv.APIAddr() + "/v1/trust?index=" + "999999" + "&wait=1h")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); resp.StatusCode != http.StatusOK || d > 5*time.Second {
		t.Fatalf("a 1h wait with MaxWait 300ms: %d after %s", resp.StatusCode, d)
	}

	dns := make([]string, maxDNSNames+1)
	for i := range dns {
		dns[i] = "n.example"
	}
	if _, _, err := srv.register(ctx, api.RegisterRequest{CSR: testCSR(t), NodeID: "n1", DNSNames: dns}, ""); err == nil || !strings.Contains(err.Error(), "at most 16 DNS names") {
		t.Fatalf("17 DNS names: %v", err)
	}
}
