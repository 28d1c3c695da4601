package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
)

// BenchmarkRegistration measures node registrations end to end through a
// three-root loopback cluster: P-384 node keys, a node join token, HTTPS
// to any root (each signs with its own issuer), Raft commit of the
// atomically consumed token and issued certificate. Beside it, in the same
// run, the raw crypto of one registration (CSR check + certificate
// signature) on one core. Client-side key and CSR generation happen before
// the timer.
func BenchmarkRegistration(b *testing.B) {
	ctx := context.Background()
	limits := cluster.Limits{RegistrationRate: 1e6, RegistrationBurst: 1e6, SigningRate: 1e6, SigningBurst: 1e6}
	opts := cluster.Options{Limits: limits, Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error})}
	base := b.TempDir()
	r1, res, err := cluster.Bootstrap(cluster.BootstrapConfig{Network: network, Name: "r1", DataDir: filepath.Join(base, "r1"),
		RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
	if err != nil {
		b.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		b.Fatal(err)
	}
	servers := []*cluster.Server{r1}
	defer func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}()
	admin, err := client.New(client.Config{Server: r1.APIAddr(), CAFile: cluster.RootsPath(r1.DataDir()), Credential: cluster.CredentialPath(r1.DataDir())})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	for _, name := range []string{"r2", "r3"} {
		tok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root"})
		if err != nil {
			b.Fatal(err)
		}
		s, err := cluster.Join(ctx, cluster.JoinConfig{Join: r1.APIAddr(), Token: tok.Secret, CAHash: res.CAHash, Name: name,
			DataDir: filepath.Join(base, name), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Options: opts})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			b.Fatal(err)
		}
		servers = append(servers, s)
	}
	var clients []*client.Client
	for _, s := range servers {
		cl, err := client.New(client.Config{Server: s.APIAddr(), CAFile: cluster.RootsPath(r1.DataDir())})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}

	// Node keys, CSRs and enough token uses, before the timer.
	csrs := make([][]byte, b.N)
	for i := range csrs {
		k, _ := ca.GenerateKey(ca.KeyP384, nil)
		if csrs[i], err = ca.NewCSR(k, ca.Identity{Network: network, Kind: ca.KindNode, Name: fmt.Sprintf("bench-%d", i)}, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	var tokens []string
	for left := b.N; left > 0; left -= 10000 {
		tok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Uses: min(left, 10000)})
		if err != nil {
			b.Fatal(err)
		}
		tokens = append(tokens, tok.Secret)
	}

	const workers = 32
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				_, err := cl.Register(ctx, api.RegisterRequest{CSR: csrs[i], NodeID: fmt.Sprintf("bench-%d", i), Token: tokens[i/10000]})
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	rate := float64(b.N) / elapsed.Seconds()

	// The raw crypto of one registration on one core, in the same run.
	rawN := min(b.N, 300)
	issuerKey, _ := ca.GenerateKey(ca.KeyP256, nil) // the default issuing key type
	root, _ := ca.NewRoot(network, time.Now(), nil)
	issuerCert, _ := ca.SignIntermediate(root, issuerKey.Public(), network, "raw", time.Now(), nil)
	issuer := ca.Signer{Cert: issuerCert, Key: issuerKey}
	t0 := time.Now()
	for i := range rawN {
		csr, err := ca.CheckCSR(csrs[i])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ca.SignNode(issuer, ca.NodeRequest{PublicKey: csr.PublicKey, Network: network, NodeID: "raw", Now: time.Now()}, nil); err != nil {
			b.Fatal(err)
		}
	}
	raw := float64(rawN) / time.Since(t0).Seconds()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(rate, "registrations/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(raw, "raw-per-core/s")
	b.ReportMetric(rate/raw, "ratio-to-one-core")
}
