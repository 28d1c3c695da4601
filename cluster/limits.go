package cluster

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// sourceLimiter keeps a token bucket per client address, bounded in how many
// addresses it remembers.
type sourceLimiter struct {
	rate  rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newSourceLimiter(perSecond float64, burst, maxSources int) *sourceLimiter {
	return &sourceLimiter{rate: rate.Limit(perSecond), burst: burst, max: maxSources, buckets: map[string]*rate.Limiter{}}
}

// sourceOf is the client address of r (its host, without the port).
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// allow takes a token for the client of r, or returns how long to wait.
// share is this server's part of the limit (1/N of it among N root
// servers), so that a client spreading its requests over every server
// gets no more than the limit in all.
func (l *sourceLimiter) allow(r *http.Request, now time.Time, share float64) (time.Duration, bool) {
	host := sourceOf(r)
	l.mu.Lock()
	b, ok := l.buckets[host]
	if !ok {
		if len(l.buckets) >= l.max {
			// Forget full buckets first; they carry no debt.
			for k, v := range l.buckets {
				if v.TokensAt(now) >= float64(v.Burst()) {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= l.max {
				l.mu.Unlock()
				return time.Second, false
			}
		}
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[host] = b
	}
	l.mu.Unlock()
	if share > 0 && share < 1 {
		b.SetLimitAt(now, l.rate*rate.Limit(share))
		b.SetBurstAt(now, max(1, int(float64(l.burst)*share)))
	}
	return take(b, now)
}

// take takes one token from b without waiting, or says how long until one
// is there.
func take(b *rate.Limiter, now time.Time) (time.Duration, bool) {
	if b.AllowN(now, 1) {
		return 0, true
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return time.Second, false
	}
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return d, false
}

// writeTooMany answers 429 with a Retry-After in whole seconds.
func writeTooMany(w http.ResponseWriter, wait time.Duration, what string) {
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, api.CodeTooMany, what+" is over its rate limit; retry after "+strconv.Itoa(secs)+"s")
}

// limitShare is this server's share of the per-source limits: 1/N among
// the N voters of the replicated state.
func (s *Server) limitShare() float64 {
	n := 0
	for _, srv := range s.store.Servers() {
		if srv.Status == fsm.ServerVoter {
			n++
		}
	}
	if n <= 1 {
		return 1
	}
	return 1 / float64(n)
}
