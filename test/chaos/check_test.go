package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kmapi "github.com/keymesh/keymesh/cluster/api"
)

// h builds a synthetic history: times are in milliseconds.
type h []Op

func at(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }

func op(client int, kind OpKind, key string, call, ret int, outcome Outcome, result string) Op {
	return Op{Client: client, Server: "r1", Kind: kind, Key: key, Call: at(call), Return: at(ret), Outcome: outcome, Result: result}
}

func list(client int, kind string, call, ret int, keys ...string) Op {
	o := op(client, OpListRevocations, kind, call, ret, OK, ResOK)
	o.Values = append([]string{}, keys...)
	return o
}

func numbered(ops h) []Op {
	out := append([]Op(nil), ops...)
	for i := range out {
		out[i].ID = i
	}
	return out
}

func TestRevocationModel(t *testing.T) {
	tests := []struct {
		name string
		ops  h
		want string
	}{
		{"correct", h{
			op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
			op(1, OpReadRevocation, "token/a", 5, 15, OK, ResAbsent), // concurrent: may miss it
			op(1, OpReadRevocation, "token/a", 20, 30, OK, ResPresent),
			op(0, OpRevoke, "token/a", 20, 25, OK, ResExists),
			op(2, OpReadRevocation, "token/b", 21, 22, OK, ResAbsent),
			list(2, "token", 40, 50, "token/a"),
			op(2, OpRevoke, "key/k", 41, 45, OK, ResOK),
			list(1, "key", 60, 61, "key/k"),
		}, VerdictOK},
		{"lost acknowledged write", h{
			op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
			list(1, "token", 20, 30),
		}, VerdictViolation},
		{"stale read", h{
			op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
			op(1, OpReadRevocation, "token/a", 20, 30, OK, ResAbsent),
		}, VerdictViolation},
		{"stale list across keys", h{
			op(0, OpRevoke, "token/b", 0, 10, OK, ResOK),
			op(0, OpRevoke, "token/a", 20, 30, OK, ResOK),
			list(1, "token", 15, 40, "token/a"), // sees a, so it follows b: must see b
		}, VerdictViolation},
		{"read sees a write before it was made", h{
			op(1, OpReadRevocation, "token/a", 0, 5, OK, ResPresent),
			op(0, OpRevoke, "token/a", 10, 20, OK, ResOK),
		}, VerdictViolation},
		{"exists without a write", h{
			op(0, OpRevoke, "node/n", 0, 10, OK, ResExists),
		}, VerdictViolation},
		{"two writes of one key both ok", h{
			op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
			op(1, OpRevoke, "token/a", 5, 15, OK, ResOK),
		}, VerdictViolation},
		{"unknown write seen later", h{
			op(0, OpRevoke, "token/a", 0, 10, Unknown, ""),
			op(1, OpReadRevocation, "token/a", 20, 30, OK, ResAbsent),
			op(1, OpReadRevocation, "token/a", 40, 50, OK, ResPresent),
			op(1, OpReadRevocation, "token/a", 60, 70, OK, ResPresent),
		}, VerdictOK},
		{"unknown write seen, then unseen", h{
			op(0, OpRevoke, "token/a", 0, 10, Unknown, ""),
			op(1, OpReadRevocation, "token/a", 40, 50, OK, ResPresent),
			op(1, OpReadRevocation, "token/a", 60, 70, OK, ResAbsent),
		}, VerdictViolation},
		{"failed operations do not count", h{
			op(0, OpRevoke, "token/a", 0, 10, Fail, ""),
			op(1, OpReadRevocation, "token/a", 20, 30, Fail, ""),
			op(1, OpReadRevocation, "token/a", 40, 50, OK, ResAbsent),
		}, VerdictOK},
		{"probe writes count as writes", h{
			op(0, OpProbe, "token/p", 0, 10, OK, ResOK),
			list(1, "token", 20, 30),
		}, VerdictViolation},
		{"pending write is open", h{
			op(0, OpRevoke, "cert/c1", 0, 0, Pending, ""),
			list(1, "cert", 20, 30, "cert/c1"),
		}, VerdictOK},
		{"unknown write seen before it was made", h{
			op(1, OpReadRevocation, "key/k", 0, 5, OK, ResPresent),
			op(0, OpRevoke, "key/k", 10, 20, Unknown, ""),
		}, VerdictViolation},
		{"many open writes stay cheap", manyOpen(200), VerdictOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := RevocationModel{}.Check(numbered(tc.ops), 10*time.Second)
			if v.Result != tc.want {
				t.Fatalf("verdict %s (partition %q), want %s", v.Result, v.Partition, tc.want)
			}
		})
	}
}

// manyOpen is n writes of unknown outcome, every one seen later in a list
// of their kind; they overlap each other.
func manyOpen(n int) h {
	var ops h
	var keys []string
	for i := range n {
		k := fmt.Sprintf("node/n%d", i)
		keys = append(keys, k)
		ops = append(ops, op(i, OpRevoke, k, i, i+1, Unknown, ""))
		ops = append(ops, op(i, OpReadRevocation, k, n+10+i, n+11+i, OK, ResPresent))
	}
	return append(ops, list(0, "node", 3*n, 3*n+1, keys...))
}

func TestRevocationModelDropsUnseenUnknowns(t *testing.T) {
	ops := numbered(h{
		op(0, OpRevoke, "token/a", 0, 10, Unknown, ""),
		op(0, OpRevoke, "token/b", 0, 10, Unknown, ""),
		op(1, OpReadRevocation, "token/b", 20, 30, OK, ResPresent),
	})
	v := RevocationModel{}.Check(ops, 10*time.Second)
	if v.Result != VerdictOK || v.Dropped != 1 || v.Open != 0 || v.Partitions != 1 {
		t.Fatalf("verdict %+v: want ok with 1 dropped, b closed, one partition", v)
	}
	// With a second write of b, the unknown one stays open.
	ops = numbered(append(ops, op(2, OpRevoke, "token/b", 40, 50, OK, ResExists)))
	if v := (RevocationModel{}).Check(ops, 10*time.Second); v.Result != VerdictOK || v.Open != 1 {
		t.Fatalf("verdict %+v: want ok with 1 open", v)
	}
	// Keys of a listed kind are one partition.
	ops = numbered(append(ops, list(3, "token", 60, 70, "token/b"), op(3, OpRevoke, "key/k", 0, 5, OK, ResOK)))
	if v := (RevocationModel{}).Check(ops, 10*time.Second); v.Result != VerdictOK || v.Partitions != 2 {
		t.Fatalf("verdict %+v: want ok in 2 partitions", v)
	}
}

func TestVerdictVisualize(t *testing.T) {
	v := RevocationModel{}.Check(numbered(h{
		op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
		op(1, OpReadRevocation, "token/a", 20, 30, OK, ResAbsent),
	}), 10*time.Second)
	path := filepath.Join(t.TempDir(), "view.html")
	if err := v.Visualize(path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), "token/a") {
		t.Errorf("visualization does not name the key: %v", err)
	}
	if err := (Verdict{Model: "x"}).Visualize(path); err == nil {
		t.Error("an empty verdict must not visualize")
	}
}

func tok(client int, kind OpKind, ref string, call, ret int, outcome Outcome, result string) Op {
	return Op{Client: client, Server: "r1", Kind: kind, Ref: ref, Call: at(call), Return: at(ret), Outcome: outcome, Result: result}
}

func create(client int, key, ref string, uses, call, ret int, outcome Outcome) Op {
	o := Op{Client: client, Server: "r1", Kind: OpTokenCreate, Key: key, Uses: uses, Call: at(call), Return: at(ret), Outcome: outcome}
	if outcome == OK {
		o.Ref, o.Result = ref, ResOK
	}
	return o
}

func read(client int, call, ret int, views ...TokenView) Op {
	return Op{Client: client, Server: "r1", Kind: OpTokenRead, Call: at(call), Return: at(ret), Outcome: OK, Result: ResOK, Tokens: views}
}

func TestTokenModel(t *testing.T) {
	tests := []struct {
		name string
		ops  h
		want string
	}{
		{"uses spent in order", h{
			create(0, "chaos-1", "t1", 2, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(2, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(1, OpTokenConsume, "t1", 40, 50, OK, ResExhausted),
			read(3, 60, 70, TokenView{Key: "chaos-1", Ref: "t1", Uses: 2, Used: 2}),
		}, VerdictOK},
		{"one use too many, across a failover", h{
			create(0, "chaos-1", "t1", 2, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(2, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(3, OpTokenConsume, "t1", 25, 35, OK, ResOK),
		}, VerdictViolation},
		{"used after its revocation", h{
			create(0, "chaos-1", "t1", 3, 0, 10, OK),
			tok(1, OpTokenRevoke, "t1", 10, 20, OK, ResOK),
			tok(2, OpTokenConsume, "t1", 30, 40, OK, ResOK),
		}, VerdictViolation},
		{"use and revocation concurrent", h{
			create(0, "chaos-1", "t1", 3, 0, 10, OK),
			tok(1, OpTokenRevoke, "t1", 20, 40, OK, ResOK),
			tok(2, OpTokenConsume, "t1", 20, 40, OK, ResOK),
			tok(2, OpTokenConsume, "t1", 50, 60, OK, ResRevoked),
		}, VerdictOK},
		{"revocation answered not found after creation", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			tok(1, OpTokenRevoke, "t1", 20, 30, OK, ResNotFound),
		}, VerdictViolation},
		{"revoked twice", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			tok(1, OpTokenRevoke, "t1", 20, 30, OK, ResOK),
			tok(1, OpTokenRevoke, "t1", 40, 50, OK, ResExists),
		}, VerdictOK},
		{"unknown use seen by a read", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, Unknown, ""),
			read(3, 60, 70, TokenView{Key: "chaos-1", Ref: "t1", Uses: 1, Used: 1}),
			tok(2, OpTokenConsume, "t1", 80, 90, OK, ResExhausted),
		}, VerdictOK},
		{"read shows a use nobody made", h{
			create(0, "chaos-1", "t1", 2, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			read(3, 60, 70, TokenView{Key: "chaos-1", Ref: "t1", Uses: 2, Used: 2}),
		}, VerdictViolation},
		{"unknown creation seen later", h{
			create(0, "chaos-1", "", 1, 0, 10, Unknown),
			read(3, 60, 70, TokenView{Key: "chaos-1", Ref: "t1", Uses: 1}),
			tok(2, OpTokenConsume, "t1", 80, 90, OK, ResOK),
		}, VerdictOK},
		{"token listed that nobody made", h{
			read(3, 60, 70, TokenView{Key: "chaos-9", Ref: "t9", Uses: 1}),
		}, VerdictViolation},
		{"lost creation", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			read(3, 60, 70),
		}, VerdictViolation},
		{"unknown id", h{
			tok(1, OpTokenRevoke, "ghost1", 20, 30, OK, ResNotFound),
			tok(1, OpTokenConsume, "ghost2", 20, 30, OK, ResNotFound),
		}, VerdictOK},
		{"used up, then pruned", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(1, OpTokenConsume, "t1", 40, 50, OK, ResExhausted),
			tok(2, OpTokenRevoke, "t1", 60, 70, OK, ResNotFound),
			tok(1, OpTokenConsume, "t1", 80, 90, OK, ResNotFound),
			read(3, 100, 110),
		}, VerdictOK},
		{"pruned before it was used up", h{
			create(0, "chaos-1", "t1", 2, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			tok(2, OpTokenRevoke, "t1", 60, 70, OK, ResNotFound),
		}, VerdictViolation},
		{"back after it was pruned", h{
			create(0, "chaos-1", "t1", 1, 0, 10, OK),
			tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
			read(3, 40, 50),
			read(3, 60, 70, TokenView{Key: "chaos-1", Ref: "t1", Uses: 1, Used: 1}),
		}, VerdictViolation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := TokenModel{}.Check(numbered(tc.ops), 10*time.Second)
			if v.Result != tc.want {
				t.Fatalf("verdict %s (partition %q), want %s", v.Result, v.Partition, tc.want)
			}
		})
	}
}

func TestCheckFinal(t *testing.T) {
	reg := tok(1, OpTokenConsume, "t1", 12, 18, OK, ResOK)
	reg.Node, reg.Serial = "chaos-node-1", "5e"
	ops := numbered(h{
		op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
		op(0, OpRevoke, "token/b", 0, 10, OK, ResExists),
		op(0, OpRevoke, "token/c", 0, 10, Unknown, ""),
		op(0, OpRevoke, "token/d", 0, 10, Fail, ""),
		create(1, "chaos-1", "t1", 1, 0, 10, OK),
		reg,
		tok(1, OpTokenRevoke, "t1", 20, 30, OK, ResOK),
	})
	full := func(name string) Final {
		return Final{Server: name, StateHash: "h1",
			Consistent: map[string]bool{"token/a": true, "token/b": true},
			Local:      map[string]bool{"token/a": true, "token/b": true},
			Tokens:     map[string]TokenView{"chaos-1": {Key: "chaos-1", Ref: "t1", Uses: 1, Used: 1, Revoked: true}},
			Nodes:      map[string]NodeView{"chaos-node-1": {Node: "chaos-node-1", Status: "approved", Issuer: "r1", Serial: "5e"}}}
	}
	if vs, lost := CheckFinal(ops, []Final{full("r1"), full("r2")}); len(vs) != 0 || lost != 0 {
		t.Fatalf("complete state: %v, lost %d", vs, lost)
	}

	r2 := full("r2")
	r2.Local = map[string]bool{"token/b": true}
	vs, lost := CheckFinal(ops, []Final{full("r1"), r2})
	if lost != 1 || len(vs) != 1 || !strings.Contains(vs[0].Detail, "token/a") || !strings.Contains(vs[0].Detail, "r2 (local read)") {
		t.Fatalf("lost write on r2's replica: %v, lost %d", vs, lost)
	}

	r2 = full("r2")
	r2.StateHash = "h2"
	r2.Tokens = map[string]TokenView{"chaos-1": {Key: "chaos-1", Ref: "t1", Uses: 1}}
	vs, lost = CheckFinal(ops, []Final{full("r1"), r2})
	if lost != 1 || len(vs) != 2 || vs[0].Check != "state-hash" {
		t.Fatalf("diverged hash and lost token revocation: %v, lost %d", vs, lost)
	}

	r2 = full("r2")
	r2.Nodes = map[string]NodeView{"chaos-node-1": {Node: "chaos-node-1", Status: "pending"}}
	vs, lost = CheckFinal(ops, []Final{full("r1"), r2})
	if lost != 1 || len(vs) != 1 || !strings.Contains(vs[0].Detail, "registration of chaos-node-1") {
		t.Fatalf("an acknowledged registration is not approved on r2: %v, lost %d", vs, lost)
	}
	if vs, _ := CheckFinal(ops, nil); len(vs) != 1 {
		t.Fatalf("no finals must be a violation: %v", vs)
	}
}

func TestCheckTokenUses(t *testing.T) {
	ops := numbered(h{
		create(0, "chaos-1", "t1", 1, 0, 10, OK),
		tok(1, OpTokenConsume, "t1", 20, 30, OK, ResOK),
	})
	if vs := CheckTokenUses(ops, nil); len(vs) != 0 {
		t.Fatalf("clean: %v", vs)
	}
	twice := append(ops, tok(2, OpTokenConsume, "t1", 20, 30, OK, ResOK))
	if vs := CheckTokenUses(numbered(twice), nil); len(vs) != 1 || vs[0].Check != "token-uses" {
		t.Fatalf("two acknowledged uses of a one-use token: %v", vs)
	}
	listed := append(ops, Op{Kind: OpTokenList, Outcome: OK, Tokens: []TokenView{{Key: "chaos-1", Ref: "t1", Uses: 1, Used: 2}}})
	if vs := CheckTokenUses(numbered(listed), nil); len(vs) != 1 {
		t.Fatalf("a list shows too many uses: %v", vs)
	}
	final := []Final{{Server: "r3", Tokens: map[string]TokenView{"chaos-7": {Key: "chaos-7", Ref: "t7", Uses: 1}}}}
	if vs := CheckTokenUses(ops, final); len(vs) != 1 || vs[0].Check != "token-phantom" {
		t.Fatalf("a token nobody made: %v", vs)
	}
	counted := func(used int) []Final {
		return []Final{{Server: "r1", Tokens: map[string]TokenView{"chaos-1": {Key: "chaos-1", Ref: "t1", Uses: 2, Used: used}}}}
	}
	if vs := CheckTokenUses(ops, counted(1)); len(vs) != 0 {
		t.Fatalf("final state counts the one use: %v", vs)
	}
	if vs := CheckTokenUses(ops, counted(0)); len(vs) != 1 || !strings.Contains(vs[0].Detail, "1 acknowledged") {
		t.Fatalf("final state lost an acknowledged use: %v", vs)
	}
	maybe := numbered(h{create(0, "chaos-1", "t1", 2, 0, 10, OK), tok(1, OpTokenConsume, "t1", 20, 30, Unknown, "")})
	for used, want := range map[int]int{0: 0, 1: 0, 2: 1} {
		if vs := CheckTokenUses(maybe, counted(used)); len(vs) != want {
			t.Errorf("one use of unknown outcome, final count %d: %v", used, vs)
		}
	}
}

func TestCheckSerials(t *testing.T) {
	f := Final{Server: "r1", Nodes: map[string]NodeView{
		"n1": {Node: "n1", Status: "approved", Issuer: "r1", Serial: "a1"},
		"n2": {Node: "n2", Status: "approved", Issuer: "r2", Serial: "a1"},
		"n3": {Node: "n3", Status: "pending"},
	}}
	if vs := CheckSerials([]Final{f}); len(vs) != 0 {
		t.Fatalf("one serial under two issuers: %v", vs)
	}
	f.Nodes["n4"] = NodeView{Node: "n4", Status: "approved", Issuer: "r1", Serial: "a1"}
	if vs := CheckSerials([]Final{f}); len(vs) != 1 {
		t.Fatalf("issuer r1 repeats serial a1: %v", vs)
	}
}

func TestCheckIsolation(t *testing.T) {
	sample := func(ms int, commit, applied uint64) IndexSample {
		return IndexSample{At: at(ms), State: "Leader", Commit: commit, Applied: applied}
	}
	good := Isolation{Server: "r1", Cut: at(100), Healed: at(2000), MajorityLeader: "r2", MajorityAcked: 30,
		Samples: []IndexSample{sample(110, 50, 49), sample(500, 50, 50), sample(1900, 50, 50)}}
	ops := numbered(h{
		op(0, OpRevoke, "token/a", 50, 150, OK, ResOK),     // invoked before the cut
		op(0, OpRevoke, "token/b", 200, 2100, OK, ResOK),   // answered after the heal
		op(0, OpRevoke, "token/c", 200, 1000, Unknown, ""), // no answer
		op(0, OpReadRevocation, "token/c", 200, 900, Fail, ""),
	})
	if vs := CheckIsolation(good, ops); len(vs) != 0 {
		t.Fatalf("clean isolation: %v", vs)
	}

	moved := good
	moved.Samples = []IndexSample{sample(110, 50, 49), sample(500, 51, 51)}
	if vs := CheckIsolation(moved, ops); len(vs) != 1 || !strings.Contains(vs[0].Detail, "commit index moved") {
		t.Fatalf("commit index moved while cut off: %v", vs)
	}

	acked := append(ops, op(3, OpRevoke, "token/z", 300, 400, OK, ResOK))
	acked[len(acked)-1].Server = "r1"
	acked = append(acked, op(3, OpReadRevocation, "token/z", 500, 600, OK, ResPresent))
	if vs := CheckIsolation(good, numbered(acked)); len(vs) != 2 {
		t.Fatalf("a write and a consistent read answered while cut off: %v", vs)
	}

	vain := good
	vain.MajorityLeader, vain.MajorityAcked, vain.Samples = "r1", 0, vain.Samples[:1]
	if vs := CheckIsolation(vain, ops); len(vs) != 3 {
		t.Fatalf("an isolation without effect and without readings: %v", vs)
	}
}

func TestFailover(t *testing.T) {
	ops := numbered(h{
		op(0, OpRevoke, "token/a", 900, 1100, OK, ResOK),  // invoked before the kill took hold
		op(1, OpRevoke, "token/b", 1010, 1700, OK, ResOK), // through a survivor
		op(2, OpProbe, "token/p", 1020, 1600, OK, ResOK),
		op(2, OpProbe, "token/q", 1020, 1500, OK, ResExists),
		op(2, OpProbe, "token/r", 1020, 1400, Unknown, ""),
	})
	ops[1].Server, ops[2].Server = "r2", "r3"
	ops[0].Server = "r2"
	d, ok := Failover(ops, "r1", at(1000), at(1005))
	if !ok || d != at(600) {
		t.Fatalf("failover %s %v, want 600ms", d, ok)
	}
	if _, ok := Failover(ops, "r1", at(2000), at(2000)); ok {
		t.Error("no write after the fault: want none")
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 25; i++ {
		ds = append(ds, at(i*10))
	}
	l := Percentiles(ds)
	if l.Count != 25 || l.P50 != 130 || l.P99 != 250 || l.Max != 250 {
		t.Fatalf("%+v", l)
	}
	if (Percentiles(nil) != Latency{}) {
		t.Error("no durations: want zero")
	}
}

func TestSchedule(t *testing.T) {
	cfg := FaultConfig{LeaderKills: 5, LeaderStops: 1, FollowerKills: 1, Isolations: 1}
	s := cfg.Schedule()
	n := map[string]int{}
	for _, f := range s {
		n[f]++
	}
	if len(s) != 8 || n[LeaderKill] != 5 || n[LeaderStop] != 1 || n[FollowerKill] != 1 || n[LeaderIsolation] != 1 {
		t.Fatalf("schedule %v", s)
	}
	if s[0] != LeaderKill || s[len(s)-1] != LeaderKill {
		t.Errorf("schedule %v: the other faults should sit among the kills", s)
	}
	if got := (FaultConfig{LeaderKills: 3}).Schedule(); len(got) != 3 {
		t.Errorf("kills only: %v", got)
	}
}

func TestClassify(t *testing.T) {
	dial := &url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	reset := &url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "read", Err: errors.New("connection reset")}}
	tests := []struct {
		name     string
		err      error
		write    bool
		outcome  Outcome
		failover bool
	}{
		{"answer", nil, true, OK, false},
		{"refused to connect", fmt.Errorf("client: %w", dial), true, Fail, true},
		{"reset after sending", fmt.Errorf("client: %w", reset), true, Unknown, true},
		{"reset on a read", reset, false, Fail, true},
		{"unknown outcome", &kmapi.APIError{Status: 503, Code: "unknown_outcome"}, true, Unknown, true},
		{"no leader on a read", &kmapi.APIError{Status: 503, Code: "no_leader"}, false, Fail, true},
		{"timeout", &kmapi.APIError{Status: http.StatusGatewayTimeout, Code: "timeout"}, true, Unknown, true},
		{"client gave up", context.DeadlineExceeded, true, Unknown, true},
		{"bad request", &kmapi.APIError{Status: 400, Code: "bad_request"}, true, Fail, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, f := classify(tc.err, tc.write)
			if o != tc.outcome || f != tc.failover {
				t.Fatalf("classify = %s, %v; want %s, %v", o, f, tc.outcome, tc.failover)
			}
		})
	}
}

// TestPolicyModelCatchesLostUpdates: two writes that both replaced
// version 3 cannot both have succeeded; a sequential history passes.
func TestPolicyModelCatchesLostUpdates(t *testing.T) {
	set := func(id, client int, expect, version uint64, result string, call, ret time.Duration) Op {
		return Op{ID: id, Client: client, Kind: OpPolicySet, Outcome: OK, Result: result, Expect: expect, Version: version, Call: call, Return: ret}
	}
	good := []Op{
		set(1, 1, 0, 1, ResOK, 1, 2),
		set(2, 2, 0, 0, ResConflict, 3, 4),
		set(3, 1, 1, 2, ResOK, 5, 6),
		{ID: 4, Client: 2, Kind: OpPolicySet, Outcome: Unknown, Expect: 2, Call: 7, Return: 8},
		set(5, 1, 3, 4, ResOK, 9, 10), // the unknown write took effect
	}
	if v := (PolicyModel{}).Check(good, time.Minute); v.Result != VerdictOK {
		t.Fatalf("a legal history: %+v", v)
	}
	lost := []Op{
		set(1, 1, 0, 1, ResOK, 1, 2),
		set(2, 2, 0, 1, ResOK, 3, 4), // replaced version 0 again: an update was lost
	}
	if v := (PolicyModel{}).Check(lost, time.Minute); v.Result != VerdictViolation {
		t.Fatalf("a lost update: %+v", v)
	}
}

// TestCheckVerifiesCatchesStaleAcceptance: a server that acknowledged a
// token's revocation and then accepted the token is caught; another
// server accepting it a moment later is not a violation (it may lag).
func TestCheckVerifiesCatchesStaleAcceptance(t *testing.T) {
	key := MintedKey("jti-1")
	ops := []Op{
		{ID: 1, Kind: OpRevoke, Key: key, Server: "r1", Outcome: OK, Result: ResOK, Call: 10, Return: 20},
		{ID: 2, Kind: OpTokenVerify, Key: key, Server: "r2", Outcome: OK, Result: ResValid, Call: 21, Return: 22},
	}
	if vs := CheckVerifies(ops); len(vs) != 0 {
		t.Fatalf("another server's lag flagged: %v", vs)
	}
	ops = append(ops, Op{ID: 3, Kind: OpTokenVerify, Key: key, Server: "r1", Outcome: OK, Result: ResValid, Call: 25, Return: 26})
	if vs := CheckVerifies(ops); len(vs) != 1 {
		t.Fatalf("r1 accepted a token after acknowledging its revocation: %v", vs)
	}
	other := []Op{{ID: 4, Kind: OpTokenVerify, Key: MintedKey("jti-2"), Server: "r1", Outcome: OK, Result: ResRefused, Values: []string{"signature"}, Call: 1, Return: 2}}
	if vs := CheckVerifies(other); len(vs) != 1 {
		t.Fatalf("a refusal of a token nobody revoked: %v", vs)
	}
}

// TestCheckAgentsCatchesLostAndStale: an agent missing an acknowledged
// revocation, one still accepting a revoked token, one refusing a token
// nobody revoked and one behind the roots are each caught; agents that hold
// everything pass.
func TestCheckAgentsCatchesLostAndStale(t *testing.T) {
	ops := numbered(h{
		op(0, OpRevoke, "token/a", 0, 10, OK, ResOK),
		op(1, OpRevoke, "token/b", 0, 10, OK, ResExists),
		op(2, OpRevoke, "token/c", 0, 10, Unknown, ""), // may or may not have happened
		op(3, OpRevoke, "key/k", 0, 10, Fail, ""),      // certainly not done
	})
	good := AgentFinal{Agent: "agent-1", Index: 40, Revocations: map[string]bool{"token/a": true, "token/b": true},
		Verifies: map[string]string{"token/a": "token_revoked", "token/b": "token_revoked", "token/c": ResValid, "token/d": ResValid}}
	if vs, lost := CheckAgents(ops, []AgentFinal{good, good}, 40); len(vs) != 0 || lost != 0 {
		t.Fatalf("agents holding everything: %v (lost %d)", vs, lost)
	}
	for _, tc := range []struct {
		name  string
		agent func(a AgentFinal) AgentFinal
		check string
		lost  int
	}{
		{"lost acknowledged revocation", func(a AgentFinal) AgentFinal {
			a.Revocations = map[string]bool{"token/a": true}
			return a
		}, "lost-on-agent", 1},
		{"stale acceptance", func(a AgentFinal) AgentFinal {
			a.Verifies = map[string]string{"token/a": ResValid}
			return a
		}, "agent-verify", 0},
		{"refusal of a token nobody revoked", func(a AgentFinal) AgentFinal {
			a.Verifies = map[string]string{"token/d": "token_revoked"}
			return a
		}, "agent-verify", 0},
		{"behind the roots", func(a AgentFinal) AgentFinal {
			a.Index = 39
			return a
		}, "agent", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.agent(good)
			bad.Agent = "agent-2"
			vs, lost := CheckAgents(ops, []AgentFinal{good, bad}, 40)
			if len(vs) != 1 || vs[0].Check != tc.check || !strings.Contains(vs[0].Detail, "agent-2") || lost != tc.lost {
				t.Fatalf("violations %v (lost %d), want one %q naming agent-2 (lost %d)", vs, lost, tc.check, tc.lost)
			}
		})
	}
}
