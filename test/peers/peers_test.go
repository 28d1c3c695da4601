//go:build peers

// Package peers measures keymesh side by side with the peers operators
// compare it with, each run as real processes on loopback with the same
// durability and TLS: the write path against etcd (three members, mutual
// TLS, fsync), registrations against step-ca (standalone, its default
// durable store). Rounds alternate (keymesh, peer, keymesh, peer) so that
// the machine's noise falls on both. `make bench-peers` runs it; it is not
// part of `make test`.
//
//	PEERS_ROUNDS      rounds of each side per figure (default 2)
//	PEERS_WRITES      writes per round at 1 writer (default 2000; 10x at 64)
//	PEERS_REGS        registrations per round (default 3000)
//	PEERS_ONLY        run only the figures whose name contains this
package peers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/test/harness"
)

var bin string

func TestMain(m *testing.M) { harness.Main(m, &bin) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// keymeshCluster is three root processes of the built binary.
type keymeshCluster struct {
	c       *harness.Cluster
	clients []*client.Client // one admin client per root
	network string
}

func startKeymesh(t testing.TB) *keymeshCluster {
	t.Helper()
	// Registrations come from one address here; the per-address limits of
	// a production cluster would refuse a benchmark's load.
	c := harness.Start(t, bin, harness.Config{Extra: []string{"--log-level", "error",
		"--registration-rate", "1000000", "--registration-burst", "1000000"}})
	k := &keymeshCluster{c: c, network: c.Network}
	for _, r := range c.Roots {
		cl, err := c.NewClient(r, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		k.clients = append(k.clients, cl)
	}
	return k
}

func (k *keymeshCluster) Conditions() string {
	return "keymesh " + commit() + ", 3 root processes on loopback, Raft over mutual TLS, Raft log in a write-ahead log (raft-wal, one fsync per append), " +
		"HTTPS API (TLS 1.3, HTTP/1.1 keep-alive) with a mutual-TLS admin credential, each request to root i%3 (followers forward) or to the leader, as the row says"
}

// commit names the checkout the binary was built from.
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "(commit unknown)"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " with local changes"
	}
	return "commit " + rev
}

// RevokeOp is a write load: op(i) revokes token "bench-<prefix>-<i>"
// through root i%3 (toLeader: through the leader, as it is when the load
// starts) and returns once it is committed and applied on that root.
func (k *keymeshCluster) RevokeOp(t testing.TB, prefix string, toLeader bool) op {
	t.Helper()
	pick := func(i int) *client.Client { return k.clients[i%len(k.clients)] }
	if toLeader {
		l := k.c.Leader(10 * time.Second)
		for j, r := range k.c.Roots {
			if r == l {
				pick = func(int) *client.Client { return k.clients[j] }
			}
		}
	}
	return func(ctx context.Context, i int) error {
		_, err := pick(i).Revoke(ctx, api.RevokeRequest{Kind: "token", ID: fmt.Sprintf("bench-%s-%d", prefix, i), Reason: "keyCompromise"})
		return err
	}
}

// RegisterOp prepares n node keys of keyType with their CSRs and join
// tokens (client-side work, outside the measured time, as on the step-ca
// side) and returns the registration load: op(i) registers node i through
// root i%3 and returns once its certificate is committed.
func (k *keymeshCluster) RegisterOp(t testing.TB, keyType ca.KeyType, prefix string, n int) op {
	t.Helper()
	csrs := make([][]byte, n)
	for i := range csrs {
		key, err := ca.GenerateKey(keyType, nil)
		if err != nil {
			t.Fatal(err)
		}
		if csrs[i], err = ca.NewCSR(key, ca.Identity{Network: k.network, Kind: ca.KindNode, Name: fmt.Sprintf("%s-%d", prefix, i)}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	const perToken = 10000
	var tokens []string
	for left := n; left > 0; left -= perToken {
		tok, err := k.clients[0].CreateJoinToken(context.Background(), api.CreateJoinTokenRequest{Kind: "node", Uses: min(left, perToken)})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok.Secret)
	}
	return func(ctx context.Context, i int) error {
		_, err := k.clients[i%len(k.clients)].Register(ctx, api.RegisterRequest{CSR: csrs[i], NodeID: fmt.Sprintf("%s-%d", prefix, i), Token: tokens[i/perToken]})
		return err
	}
}

// figure is one row of the table: the same load on keymesh and on a peer.
type figure struct {
	name, unit string
	peer       string
	workers, n int
	ours       func(round int) op // a fresh load for each round
	theirs     func(round int) op
	ceiling    func() float64 // the raw crypto ceiling, or nil
}

type result struct {
	ours, theirs []round
	ceiling      float64
}

func TestPeers(t *testing.T) {
	rounds := envInt("PEERS_ROUNDS", 2)
	writes := envInt("PEERS_WRITES", 2000)
	regs := envInt("PEERS_REGS", 3000)

	km := startKeymesh(t)
	etcd := startEtcd(t, t.TempDir())
	step := startStepCA(t, stepCABinary(t), t.TempDir())

	regFigure := func(name string, kt ca.KeyType) figure {
		return figure{name: name, unit: "registrations/s", peer: "step-ca", workers: 32, n: regs,
			ours:    func(r int) op { return km.RegisterOp(t, kt, fmt.Sprintf("%s-r%d", kt, r), regs) },
			theirs:  func(r int) op { return step.SignOp(t, string(kt), regs) },
			ceiling: func() float64 { return rawRegistrationRate(t, kt, km.network) }}
	}
	writeFigure := func(writers int, toLeader bool) figure {
		name, tag := fmt.Sprintf("writes, %d writer", writers), fmt.Sprintf("w%d", writers)
		if writers > 1 {
			name += "s"
		}
		if toLeader {
			name, tag = name+", to the leader", tag+"l"
		} else {
			name += ", to any root or member"
		}
		n := writes
		if writers > 1 {
			n = 10 * writes
		}
		theirs := func(r int) op { return etcd.PutOp(t, fmt.Sprintf("%s-r%d", tag, r)) }
		if toLeader {
			theirs = func(r int) op { return etcd.PutLeaderOp(t, fmt.Sprintf("%s-r%d", tag, r)) }
		}
		return figure{name: name, unit: "writes/s", peer: "etcd", workers: writers, n: n,
			ours:   func(r int) op { return km.RevokeOp(t, fmt.Sprintf("%s-r%d", tag, r), toLeader) },
			theirs: theirs}
	}
	figures := []figure{
		writeFigure(1, false),
		writeFigure(1, true),
		writeFigure(64, false),
		writeFigure(64, true),
		regFigure("registrations P-256, 32 clients", ca.KeyP256),
		regFigure("registrations P-384, 32 clients", ca.KeyP384),
	}

	if only := os.Getenv("PEERS_ONLY"); only != "" {
		figures = slices.DeleteFunc(figures, func(f figure) bool { return !strings.Contains(f.name, only) })
	}
	ctx := context.Background()
	// A warm-up of each load, not counted: connections, the Go runtime's
	// first growth, the peers' first compactions.
	for _, f := range figures {
		warm := max(f.n/10, 50)
		if _, err := drive(ctx, warm, f.workers, f.ours(-1)); err != nil {
			t.Fatalf("%s: keymesh warm-up: %v", f.name, err)
		}
		if _, err := drive(ctx, warm, f.workers, f.theirs(-1)); err != nil {
			t.Fatalf("%s: %s warm-up: %v", f.name, f.peer, err)
		}
	}

	results := make([]result, len(figures))
	for fi, f := range figures {
		for r := 0; r < rounds; r++ {
			ours, theirs := f.ours(r), f.theirs(r)
			a, err := drive(ctx, f.n, f.workers, ours)
			if err != nil {
				t.Fatalf("%s, keymesh round %d: %v", f.name, r, err)
			}
			b, err := drive(ctx, f.n, f.workers, theirs)
			if err != nil {
				t.Fatalf("%s, %s round %d: %v", f.name, f.peer, r, err)
			}
			t.Logf("%s round %d: keymesh %s; %s %s", f.name, r, a, f.peer, b)
			results[fi].ours = append(results[fi].ours, a)
			results[fi].theirs = append(results[fi].theirs, b)
		}
		if f.ceiling != nil {
			results[fi].ceiling = f.ceiling()
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\nConditions (2 cores, loopback, rounds alternate keymesh/peer, %d each):\n", rounds)
	fmt.Fprintf(&out, "  keymesh: %s\n  etcd: %s\n  step-ca: %s\n\n", km.Conditions(), etcd.Conditions(), step.Conditions())
	fmt.Fprintf(&out, "| figure | keymesh | peer | rate ratio (keymesh/peer) | p99 ratio (keymesh/peer) |\n|---|---|---|---|---|\n")
	var lines []string
	for fi, f := range figures {
		res := results[fi]
		x, y := median(res.ours, rate), median(res.theirs, rate)
		px, py := median(res.ours, p99), median(res.theirs, p99)
		fmt.Fprintf(&out, "| %s | %s | %s %s | %.2f | %.2f |\n", f.name, span(res.ours), f.peer, span(res.theirs), x/y, px/py)
		lines = append(lines, fmt.Sprintf("%s (%s): keymesh %.0f, %s %.0f, ratio %.2f", f.name, f.unit, x, f.peer, y, x/y))
		lines = append(lines, fmt.Sprintf("%s p99 (ms): keymesh %.2f, %s %.2f, ratio %.2f", f.name, px*1e3, f.peer, py*1e3, px/py))
		if res.ceiling > 0 {
			lines = append(lines, fmt.Sprintf("%s, of the raw crypto ceiling (CSR check + signature, 2 cores): keymesh %.0f of %.0f, ratio %.2f", f.name, x, res.ceiling, x/res.ceiling))
		}
	}
	out.WriteString("\n" + strings.Join(lines, "\n") + "\n")
	fmt.Print(out.String())
	if path := os.Getenv("PEERS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func rate(r round) float64 { return r.Rate }
func p99(r round) float64  { return r.P99.Seconds() }

// median of f over rs (the mean of the middle two for an even count).
func median(rs []round, f func(round) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// span is the range of the rounds' rates and p99s.
func span(rs []round) string {
	lo, hi := slices.MinFunc(rs, byRate), slices.MaxFunc(rs, byRate)
	plo, phi := slices.MinFunc(rs, byP99), slices.MaxFunc(rs, byP99)
	return fmt.Sprintf("%.0f–%.0f/s, p99 %s–%s", lo.Rate, hi.Rate, ms(plo.P99), ms(phi.P99))
}

func byRate(a, b round) int { return int(a.Rate - b.Rate) }
func byP99(a, b round) int  { return int(a.P99 - b.P99) }

func ms(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1e3, 'f', 1, 64) + " ms" }

// rawRegistrationRate is the raw crypto of registrations on both cores:
// the CSR's signature checked and the certificate signed with a P-256
// issuing key, nothing else, in the same run.
func rawRegistrationRate(t testing.TB, kt ca.KeyType, network string) float64 {
	t.Helper()
	const n = 400
	csrs := make([][]byte, n)
	for i := range csrs {
		key, _ := ca.GenerateKey(kt, nil)
		var err error
		if csrs[i], err = ca.NewCSR(key, ca.Identity{Network: network, Kind: ca.KindNode, Name: fmt.Sprint("raw-", i)}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	issuerKey, _ := ca.GenerateKey(ca.KeyP256, nil)
	root, _ := ca.NewRoot(network, time.Now(), nil)
	issuerCert, _ := ca.SignIntermediate(root, issuerKey.Public(), network, "raw", time.Now(), nil)
	issuer := ca.Signer{Cert: issuerCert, Key: issuerKey}
	r, err := drive(context.Background(), n, 2, func(_ context.Context, i int) error {
		csr, err := ca.CheckCSR(csrs[i])
		if err != nil {
			return err
		}
		_, err = ca.SignNode(issuer, ca.NodeRequest{PublicKey: csr.PublicKey, Network: network, NodeID: "raw", Now: time.Now()}, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r.Rate
}
