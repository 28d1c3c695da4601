// Package benchlimit measures an operation against its physical limit in
// the same benchmark run, for the benchmarks of every package (test code
// only: no package of the product imports it).
package benchlimit

import (
	"testing"
	"time"
)

// Versus runs op and its physical limit alternately, so that both see the
// same machine load: opsPerLimit runs of op, then one of limit, until op
// has run b.N times. It reports op's and the limit's ns/op (op-ns,
// <limitName>-ns) and ratio, the limit's ns over op's (1 is the limit
// itself; 0.5 is twice its cost). The benchmark's own ns/op covers both
// loops and is not the figure to read.
func Versus(b *testing.B, limitName string, opsPerLimit int, op, limit func()) {
	b.Helper()
	var opT, limT time.Duration
	var limN int
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(opsPerLimit, b.N-done)
		t := time.Now()
		for range n {
			op()
		}
		opT += time.Since(t)
		done += n
		t = time.Now()
		limit()
		limT += time.Since(t)
		limN++
	}
	b.StopTimer()
	opNs := float64(opT.Nanoseconds()) / float64(b.N)
	limNs := float64(limT.Nanoseconds()) / float64(limN)
	b.ReportMetric(opNs, "op-ns")
	b.ReportMetric(limNs, limitName+"-ns")
	b.ReportMetric(limNs/opNs, "ratio")
}
