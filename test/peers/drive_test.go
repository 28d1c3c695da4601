//go:build peers

package peers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op is one request of a load: the i-th of a round. It returns when the
// write or the registration is durable (committed and fsynced).
type op func(ctx context.Context, i int) error

// round is what one round of a load measured.
type round struct {
	N    int
	Rate float64 // operations per second
	P50  time.Duration
	P99  time.Duration
}

func (r round) String() string {
	return fmt.Sprintf("%.0f/s, p50 %s, p99 %s", r.Rate, r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond))
}

// drive runs n operations of f on workers goroutines, each taking the next
// i, and measures the rate and the latency of each. The first error stops
// the round.
func drive(ctx context.Context, n, workers int, f op) (round, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := f(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("operation %d: %w", i, err); cancel() })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return round{}, firstErr
	}
	slices.Sort(lat)
	return round{N: n, Rate: float64(n) / elapsed.Seconds(), P50: pct(lat, 0.50), P99: pct(lat, 0.99)}, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}
