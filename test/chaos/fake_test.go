package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	kmapi "github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// fakeCluster is an in-memory twin of a root cluster's API for the load
// and the checker: one state behind a mutex, which can be made to serve
// stale reads or to drop acknowledged writes.
type fakeCluster struct {
	mu      sync.Mutex
	version uint64   // policy version
	log     []string // revocation keys in commit order
	tokens  map[string]*kmapi.JoinTokenInfo
	regs    []kmapi.RegistrationInfo
	// stale makes reads miss the last stale revocations.
	stale int
	// loseEvery acknowledges every loseEvery-th new revocation without
	// keeping it.
	loseEvery int
	writes    int
}

func newFake() *fakeCluster { return &fakeCluster{tokens: map[string]*kmapi.JoinTokenInfo{}} }

func (f *fakeCluster) Servers() []string { return []string{"r1", "r2", "r3"} }
func (f *fakeCluster) Up(string) bool    { return true }
func (f *fakeCluster) API(string) (API, error) {
	return fakeAPI{f}, nil
}

// visible is the revocation log a read sees.
func (f *fakeCluster) visible() []string {
	return f.log[:max(len(f.log)-f.stale, 0)]
}

func (f *fakeCluster) has(key string, log []string) bool {
	for _, k := range log {
		if k == key {
			return true
		}
	}
	return false
}

type fakeAPI struct{ f *fakeCluster }

func (a fakeAPI) SetPolicy(_ context.Context, text string, expect uint64) (kmapi.PolicyDoc, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if expect != f.version {
		return kmapi.PolicyDoc{}, &kmapi.APIError{Status: 409, Code: "conflict", Message: "version moved"}
	}
	f.version++
	return kmapi.PolicyDoc{Text: text, Version: f.version}, nil
}

func (a fakeAPI) Verify(_ context.Context, token, _ string) (kmapi.Verification, error) {
	t, err := identity.ParseUnverified(token, 0)
	if err != nil {
		return kmapi.Verification{Reason: "malformed"}, nil
	}
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.log {
		if k == MintedKey(t.Claims.ID) {
			return kmapi.Verification{Reason: "token_revoked"}, nil
		}
	}
	return kmapi.Verification{Valid: true}, nil
}

func (a fakeAPI) Revoke(_ context.Context, req kmapi.RevokeRequest) (kmapi.RevokeResponse, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	key := req.Kind + "/" + req.ID
	if f.has(key, f.log) {
		return kmapi.RevokeResponse{}, &kmapi.APIError{Status: http.StatusConflict, Code: "exists"}
	}
	f.writes++
	if f.loseEvery == 0 || f.writes%f.loseEvery != 0 {
		f.log = append(f.log, key)
	}
	return kmapi.RevokeResponse{}, nil
}

func (a fakeAPI) Revocation(_ context.Context, kind, id string, _ bool) (fsm.Revocation, bool, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	found := f.has(kind+"/"+id, f.visible())
	return fsm.Revocation{Kind: fsm.RevocationKind(kind), ID: id}, found, nil
}

func (a fakeAPI) Revocations(_ context.Context, kind string, _ bool) ([]fsm.Revocation, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fsm.Revocation
	for _, key := range f.visible() {
		k, id := SplitKey(key)
		if kind == "" || k == kind {
			out = append(out, fsm.Revocation{Kind: fsm.RevocationKind(k), ID: id})
		}
	}
	return out, nil
}

func (a fakeAPI) CreateJoinToken(_ context.Context, req kmapi.CreateJoinTokenRequest) (kmapi.CreatedJoinToken, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("t%d", len(f.tokens)+1)
	info := kmapi.JoinTokenInfo{ID: id, Kind: req.Kind, Uses: req.Uses, Description: req.Description}
	f.tokens[id] = &info
	return kmapi.CreatedJoinToken{JoinTokenInfo: info, Secret: "secret-" + id}, nil
}

func (a fakeAPI) Register(_ context.Context, req kmapi.RegisterRequest) (kmapi.RegistrationResponse, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[strings.TrimPrefix(req.Token, "secret-")]
	switch {
	case !ok || !strings.HasPrefix(req.Token, "secret-"):
		return kmapi.RegistrationResponse{}, &kmapi.APIError{Status: http.StatusForbidden, Code: "token_not_found"}
	case t.Revoked:
		return kmapi.RegistrationResponse{}, &kmapi.APIError{Status: http.StatusForbidden, Code: "token_revoked"}
	case t.Used >= t.Uses:
		return kmapi.RegistrationResponse{}, &kmapi.APIError{Status: http.StatusForbidden, Code: "token_exhausted"}
	}
	t.Used++
	reg := kmapi.RegistrationInfo{ID: fmt.Sprintf("reg-%d", len(f.regs)), NodeID: req.NodeID, Status: "approved",
		Serial: fmt.Sprintf("%x", len(f.regs)+1), Issuer: "r1"}
	f.regs = append(f.regs, reg)
	return kmapi.RegistrationResponse{Registration: reg, Chain: [][]byte{{1}, {2}}}, nil
}

func (a fakeAPI) Registrations(context.Context, string, bool) ([]kmapi.RegistrationInfo, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]kmapi.RegistrationInfo(nil), f.regs...), nil
}

func (a fakeAPI) JoinTokens(context.Context) ([]kmapi.JoinTokenInfo, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []kmapi.JoinTokenInfo{{ID: "root1", Kind: "root", Uses: 1, Description: "bootstrap root-join token"}}
	for _, t := range f.tokens {
		out = append(out, *t)
	}
	return out, nil
}

func (a fakeAPI) RevokeJoinToken(_ context.Context, id string) error {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[id]
	switch {
	case !ok:
		return &kmapi.APIError{Status: http.StatusNotFound, Code: "not_found"}
	case t.Revoked:
		return &kmapi.APIError{Status: http.StatusConflict, Code: "exists"}
	}
	t.Revoked = true
	return nil
}

// finals reads the fake's final state as every server would.
func (f *fakeCluster) finals(rec *Recorder) []Final {
	var out []Final
	for _, name := range f.Servers() {
		api, _ := f.API(name)
		fin := Final{Server: name, StateHash: "same", Consistent: map[string]bool{}, Local: map[string]bool{}, Tokens: map[string]TokenView{}, Nodes: map[string]NodeView{}}
		revs, _ := api.Revocations(context.Background(), "", true)
		for _, r := range revs {
			fin.Consistent[string(r.Kind)+"/"+r.ID] = true
			fin.Local[string(r.Kind)+"/"+r.ID] = true
		}
		toks, _ := api.JoinTokens(context.Background())
		for _, t := range tokenViews(toks) {
			fin.Tokens[t.Key] = t
		}
		regs, _ := api.Registrations(context.Background(), "", true)
		for _, n := range nodeViews(regs) {
			fin.Nodes[n.Node] = n
		}
		out = append(out, fin)
	}
	call := rec.Now()
	present := map[string]bool{}
	revs, _ := fakeAPI{f}.Revocations(context.Background(), "", true)
	for _, r := range revs {
		present[string(r.Kind)+"/"+r.ID] = true
	}
	RecordReads(rec, "r1", WrittenKeys(rec.Ops()), present, call, rec.Now())
	return out
}

// runFake drives the load against f until it has made n operations.
func runFake(t *testing.T, f *fakeCluster, n int) []Op {
	t.Helper()
	rec := NewRecorder(nil)
	load, err := StartLoad(LoadConfig{Clients: 4, Rate: 4000, Seed: 7}, f, rec, &Keys{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(rec.Ops()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	load.Stop()
	f.finals(rec)
	return rec.Ops()
}

func TestCheckerPassesACorrectCluster(t *testing.T) {
	f := newFake()
	ops := runFake(t, f, 2000)
	for _, m := range Models() {
		if v := m.Check(ops, 30*time.Second); v.Result != VerdictOK {
			t.Errorf("%s: %s in %s", m.Name(), v.Result, v.Partition)
		}
	}
	finals := f.finals(NewRecorder(nil))
	if vs, lost := CheckFinal(ops, finals); len(vs) != 0 || lost != 0 {
		t.Errorf("final: %v", vs)
	}
	if vs := CheckTokenUses(ops, finals); len(vs) != 0 {
		t.Errorf("token uses: %v", vs)
	}
	if vs := CheckSerials(finals); len(vs) != 0 {
		t.Errorf("serials: %v", vs)
	}
	c := Count(ops)
	if c.Acknowledged == 0 || c.Reads == 0 || c.Rejected == 0 {
		t.Errorf("the load made too little of everything: %+v", c)
	}
	results := map[string]bool{}
	for _, op := range ops {
		if op.Kind == OpTokenConsume {
			results[op.Result] = true
		}
	}
	for _, r := range []string{ResOK, ResExhausted, ResRevoked, ResNotFound} {
		if !results[r] {
			t.Errorf("no registration was answered %s", r)
		}
	}
	kinds := map[OpKind]bool{}
	for _, op := range ops {
		kinds[op.Kind] = true
	}
	for _, k := range []OpKind{OpRevoke, OpReadRevocation, OpListRevocations, OpTokenCreate, OpTokenList, OpTokenRevoke, OpTokenConsume} {
		if !kinds[k] {
			t.Errorf("the load made no %s", k)
		}
	}
}

func TestCheckerCatchesStaleReads(t *testing.T) {
	f := newFake()
	f.stale = 2
	ops := runFake(t, f, 600)
	v := RevocationModel{}.Check(ops, 30*time.Second)
	if v.Result != VerdictViolation {
		t.Fatalf("reads two writes behind: verdict %s", v.Result)
	}
	// The final reads are stale too, so the last writes look lost.
	if _, lost := CheckFinal(ops, f.finals(NewRecorder(nil))); lost == 0 {
		t.Error("the last writes are invisible: want lost > 0")
	}
}

func TestCheckerCatchesLostWrites(t *testing.T) {
	f := newFake()
	f.loseEvery = 50
	ops := runFake(t, f, 600)
	if v := (RevocationModel{}).Check(ops, 30*time.Second); v.Result != VerdictViolation {
		t.Errorf("every 50th write dropped: verdict %s", v.Result)
	}
	vs, lost := CheckFinal(ops, f.finals(NewRecorder(nil)))
	if lost == 0 || !strings.Contains(fmt.Sprint(vs), "missing on") {
		t.Errorf("lost %d: %v", lost, vs)
	}
}
