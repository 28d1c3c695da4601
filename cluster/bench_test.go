package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
)

// emptyFSM is the baseline: Raft with a state machine that does nothing.
type emptyFSM struct{}

func (emptyFSM) Apply(*raft.Log) any                 { return nil }
func (emptyFSM) Snapshot() (raft.FSMSnapshot, error) { return emptySnap{}, nil }
func (emptyFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type emptySnap struct{}

func (emptySnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (emptySnap) Release()                          {}

// bareCluster is three hashicorp/raft instances on the same TLS stream
// layer and log store as keymesh, with an empty FSM.
func bareCluster(b *testing.B) *raft.Raft {
	b.Helper()
	nodes, leader := bareNodes(b, testOptions(b).withDefaults())
	return nodes[leader].raft
}

// bareNodes starts three Raft servers b0, b1 and b2 on loopback with the
// TLS stream layer and an empty FSM, and returns them with the index of the
// first leader.
func bareNodes(tb testing.TB, o Options) ([]*raftNode, int) {
	tb.Helper()
	now := time.Now()
	root, err := ca.NewRoot("bench.example", now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var lns []net.Listener
	var ids []*tlsIdentity
	var conf raft.Configuration
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		name := fmt.Sprintf("b%d", i)
		ik, _ := ca.GenerateKey(ca.KeyP384, nil)
		ic, err := ca.SignIntermediate(root, ik.Public(), "bench.example", name, now, nil)
		if err != nil {
			tb.Fatal(err)
		}
		tk, _ := ca.GenerateKey(ca.KeyP384, nil)
		tc, err := ca.SignServerTLS(ca.Signer{Cert: ic, Key: ik}, tk.Public(), "bench.example", name, []string{"127.0.0.1"}, now, nil)
		if err != nil {
			tb.Fatal(err)
		}
		id, err := newTLSIdentity("bench.example", tlsCertificate([]*x509.Certificate{tc, ic}, tk), []*x509.Certificate{root.Cert})
		if err != nil {
			tb.Fatal(err)
		}
		lns, ids = append(lns, ln), append(ids, id)
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(ln.Addr().String())})
	}
	base := tb.TempDir()
	var nodes []*raftNode
	for i := range lns {
		name := fmt.Sprintf("b%d", i)
		n, err := startRaft(filepath.Join(base, name), name, lns[i], "", ids[i], emptyFSM{}, o, false)
		if err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
				tb.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	tb.Cleanup(func() {
		for _, n := range nodes {
			n.shutdown()
		}
	})
	// The first to win an election says so on its leadership channel.
	won := make(chan int, len(nodes))
	for i, n := range nodes {
		go func() {
			select {
			case l := <-n.raft.LeaderCh():
				if l {
					won <- i
				}
			case <-time.After(10 * time.Second):
			}
		}()
	}
	select {
	case l := <-won:
		return nodes, l
	case <-time.After(10 * time.Second):
		tb.Fatal("no bare leader within 10s")
		return nil, 0
	}
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	if len(l.d) == 0 {
		return 0
	}
	return l.d[min(len(l.d)-1, int(float64(len(l.d))*p))]
}

// drive runs n operations with w concurrent writers and returns the rate.
func drive(n, w int, lat *latencies, op func(i int) error) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat.add(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// BenchmarkRevocationCommit measures revocation writes through a
// three-server loopback cluster (Propose on the leader: encode, Raft over
// mutual TLS, WAL fsync, fsm Apply) beside bare hashicorp/raft with an
// empty FSM on the same transport and stores, in the same run. The figure
// that counts is ratio = keymesh writes/s / bare writes/s.
func BenchmarkRevocationCommit(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			tc := newTestCluster(b, 3)
			leader := tc.leader()
			bare := bareCluster(b)
			ctx := context.Background()
			payload, _ := fsm.Encode(fsm.MsgRevoke, time.Now(), fsm.Revoke{Revocation: fsm.Revocation{Kind: "token", ID: "x"}})
			var seq atomic.Int64
			b.ResetTimer()
			var bareLat, ourLat latencies
			bareRate, err := drive(b.N, writers, &bareLat, func(int) error {
				return bare.Apply(payload, 10*time.Second).Error()
			})
			if err != nil {
				b.Fatal(err)
			}
			ourRate, err := drive(b.N, writers, &ourLat, func(int) error {
				_, err := leader.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{
					Kind: "token", ID: fmt.Sprintf("bench-%d", seq.Add(1)), Reason: "bench"}})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(ourRate, "writes/s")
			b.ReportMetric(bareRate, "bare-writes/s")
			b.ReportMetric(ourRate/bareRate, "ratio")
			b.ReportMetric(float64(ourLat.pct(0.50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(ourLat.pct(0.99).Microseconds()), "p99-µs")
			b.ReportMetric(float64(bareLat.pct(0.50).Microseconds()), "bare-p50-µs")
			b.ReportMetric(float64(bareLat.pct(0.99).Microseconds()), "bare-p99-µs")
		})
	}
}

// BenchmarkAPIWrite measures what the HTTPS API adds to a write: one writer
// revoking tokens through POST /v1/revocations on the leader (TLS 1.3 with
// the admin credential, JSON, the credential's chain check, Cedar, then
// Propose) beside Propose on the same leader in the same run. The figure
// that counts is ratio = API writes/s / Propose writes/s; with -cpuprofile
// it shows what each part costs.
func BenchmarkAPIWrite(b *testing.B) {
	tc := newTestCluster(b, 3)
	leader := tc.leader()
	ctx := context.Background()
	cert, err := ca.LoadCredential(CredentialPath(leader.DataDir()))
	if err != nil {
		b.Fatal(err)
	}
	pemRoots, err := os.ReadFile(RootsPath(leader.DataDir()))
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemRoots)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}, VerifyConnection: ca.RootServerVerifier}}}
	defer hc.CloseIdleConnections()
	url := "https://" + leader.APIAddr() + "/v1/revocations"
	var apiLat, proposeLat latencies
	b.ResetTimer()
	apiRate, err := drive(b.N, 1, &apiLat, func(i int) error {
		body := fmt.Sprintf(`{"kind":"token","id":"api-%d","reason":"keyCompromise"}`, i)
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST /v1/revocations: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	proposeRate, err := drive(b.N, 1, &proposeLat, func(i int) error {
		_, err := leader.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken,
			ID: fmt.Sprint("propose-", i), Reason: "keyCompromise", PruneAfter: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(apiRate, "api-writes/s")
	b.ReportMetric(proposeRate, "propose-writes/s")
	b.ReportMetric(apiRate/proposeRate, "ratio")
	b.ReportMetric(float64(apiLat.pct(0.50).Microseconds()), "api-p50-µs")
	b.ReportMetric(float64(proposeLat.pct(0.50).Microseconds()), "propose-p50-µs")
}

// BenchmarkForwardedWrite measures what forwarding adds to a write: one
// writer of token revocations through Propose on a follower (the command
// goes over HTTPS to the leader, and the follower answers once it has
// applied it: read-your-writes on that server) beside Propose on the leader
// in the same run, alternating in blocks of 100 so that the machine's noise
// falls on both. The figure that counts is ratio = forwarded writes/s /
// leader writes/s.
func BenchmarkForwardedWrite(b *testing.B) {
	tc := newTestCluster(b, 3)
	leader := tc.leader()
	follower := tc.follower(leader)
	ctx := context.Background()
	write := func(s *Server, id string) error {
		_, err := s.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: fsm.RevocationToken,
			ID: id, Reason: "keyCompromise", PruneAfter: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}})
		return err
	}
	var fwdLat, leadLat latencies
	var fwdTime, leadTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += 100 {
		n := min(100, b.N-done)
		for _, side := range []struct {
			s   *Server
			lat *latencies
			sum *time.Duration
		}{{follower, &fwdLat, &fwdTime}, {leader, &leadLat, &leadTime}} {
			start := time.Now()
			if _, err := drive(n, 1, side.lat, func(i int) error {
				return write(side.s, fmt.Sprintf("%s-%d", side.s.Name(), done+i))
			}); err != nil {
				b.Fatal(err)
			}
			*side.sum += time.Since(start)
		}
	}
	b.StopTimer()
	fwdRate, leadRate := float64(b.N)/fwdTime.Seconds(), float64(b.N)/leadTime.Seconds()
	b.ReportMetric(fwdRate, "forwarded-writes/s")
	b.ReportMetric(leadRate, "leader-writes/s")
	b.ReportMetric(fwdRate/leadRate, "ratio")
	b.ReportMetric(float64(fwdLat.pct(0.50).Microseconds()), "forwarded-p50-µs")
	b.ReportMetric(float64(leadLat.pct(0.50).Microseconds()), "leader-p50-µs")
	b.ReportMetric(float64(fwdLat.pct(0.99).Microseconds()), "forwarded-p99-µs")
	b.ReportMetric(float64(leadLat.pct(0.99).Microseconds()), "leader-p99-µs")
	b.ReportMetric(float64(fwdLat.pct(1).Microseconds()), "forwarded-max-µs")
}
