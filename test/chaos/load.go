package chaos

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kmapi "github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// API is the part of a root server's HTTP API the load uses;
// *client.Client implements it.
type API interface {
	Revoke(ctx context.Context, req kmapi.RevokeRequest) (kmapi.RevokeResponse, error)
	Revocation(ctx context.Context, kind, id string, consistent bool) (fsm.Revocation, bool, error)
	Revocations(ctx context.Context, kind string, consistent bool) ([]fsm.Revocation, error)
	CreateJoinToken(ctx context.Context, req kmapi.CreateJoinTokenRequest) (kmapi.CreatedJoinToken, error)
	JoinTokens(ctx context.Context) ([]kmapi.JoinTokenInfo, error)
	RevokeJoinToken(ctx context.Context, id string) error
	Register(ctx context.Context, req kmapi.RegisterRequest) (kmapi.RegistrationResponse, error)
	Registrations(ctx context.Context, status string, consistent bool) ([]kmapi.RegistrationInfo, error)
	SetPolicy(ctx context.Context, text string, expect uint64) (kmapi.PolicyDoc, error)
	Verify(ctx context.Context, token, aud string) (kmapi.Verification, error)
}

// Target is the cluster the load runs against.
type Target interface {
	// Servers lists the servers' names, always in the same order.
	Servers() []string
	// Up reports whether server name's process runs (it may be stopped).
	Up(name string) bool
	// API returns a client of server name.
	API(name string) (API, error)
}

// RevocationKinds are the kinds of revocation the load writes; the
// revocation model partitions the history by them.
var RevocationKinds = []string{"token", "key", "node", "cert"}

// ListedKind is the kind the load lists. It gets the fewest writes, so that
// lists stay short: a list's cost grows with the run, and its answer is a
// whole partition of the model.
const ListedKind = "node"

// newKind picks the kind of a new revocation: token 40%, key 30%, cert
// 20%, node 10%.
func newKind(rng *rand.Rand) string {
	switch n := rng.IntN(10); {
	case n < 4:
		return "token"
	case n < 7:
		return "key"
	case n < 9:
		return "cert"
	}
	return ListedKind
}

// TokenPrefix starts the description of every join token the load makes;
// tokens without it (the harness's root-join tokens) are not the load's.
const TokenPrefix = "chaos-"

// Keys hands out fresh keys and remembers the keys written so far, so that
// reads and repeated writes pick keys that exist. It is safe for concurrent
// use.
type Keys struct {
	seq atomic.Uint64

	mu      sync.Mutex
	revs    []string          // revocation keys "kind/id" of every revoke invoked
	tokens  []string          // ids of tokens whose creation was acknowledged
	secrets map[string]string // token id -> secret

	// policyVersion is the newest policy version a write made.
	policyVersion atomic.Uint64
	// mint mints a token (under an admin credential); minted holds what it
	// minted: jti -> token.
	mint   func() (token, jti string, err error)
	minted map[string]string
	jtis   []string
}

// SetMinter gives the load a way to mint tokens for its verifies.
func (k *Keys) SetMinter(mint func() (token, jti string, err error)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.mint = mint
}

// Minted returns every token the load minted, by jti.
func (k *Keys) Minted() map[string]string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]string, len(k.minted))
	for j, t := range k.minted {
		out[j] = t
	}
	return out
}

// next returns a number never returned before.
func (k *Keys) next() uint64 { return k.seq.Add(1) }

// NewRevocation returns a fresh revocation key of kind and remembers it.
func (k *Keys) NewRevocation(kind string) string {
	n := k.next()
	id := fmt.Sprintf("chaos-%d", n)
	if kind == "cert" { // serials are lower-case hex without leading zeros
		id = fmt.Sprintf("c4a05%08x", n)
	}
	key := kind + "/" + id
	k.mu.Lock()
	k.revs = append(k.revs, key)
	k.mu.Unlock()
	return key
}

// recent is how many of the newest keys count as recent.
const recent = 8

// AnyRevocation returns a revocation key written before, or "" if none.
// With fresh, it picks among the newest: reads of just-written keys
// through another server are where stale reads would show.
func (k *Keys) AnyRevocation(rng *rand.Rand, fresh bool) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return pickKey(rng, k.revs, fresh)
}

func pickKey(rng *rand.Rand, keys []string, fresh bool) string {
	if len(keys) == 0 {
		return ""
	}
	if fresh {
		return keys[len(keys)-1-rng.IntN(min(recent, len(keys)))]
	}
	return keys[rng.IntN(len(keys))]
}

// AddToken remembers the id and the secret of a token whose creation was
// acknowledged.
func (k *Keys) AddToken(ref, secret string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tokens = append(k.tokens, ref)
	if k.secrets == nil {
		k.secrets = map[string]string{}
	}
	k.secrets[ref] = secret
}

// secret returns the secret of token ref.
func (k *Keys) secret(ref string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.secrets[ref]
}

// AnyToken returns the id of a token made before, or "" if none; with
// fresh, one of the newest.
func (k *Keys) AnyToken(rng *rand.Rand, fresh bool) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return pickKey(rng, k.tokens, fresh)
}

// SplitKey splits a revocation key "kind/id".
func SplitKey(key string) (kind, id string) {
	kind, id, _ = strings.Cut(key, "/")
	return kind, id
}

// An Action is one kind of operation of the load. Prepare chooses the
// arguments (before the invocation is recorded); Do runs the operation and
// returns the answer, mapping definite rejections to Result and returning
// an error only when there is no definite answer. New capabilities
// (registrations and token uses, token mint and verify, policy writes) plug
// in as further Actions, with a Model where they have state.
type Action interface {
	Kind() OpKind
	Prepare(rng *rand.Rand, keys *Keys) Op
	Do(ctx context.Context, api API, op Op) (Op, error)
}

// Chained is an Action whose definite answer the same client follows at
// once, through the next server, with the operation Next returns: a write
// acknowledged by one server must be visible through every other at once.
type Chained interface {
	Action
	Next(done Op, rng *rand.Rand) (Action, bool)
}

// Weighted is an Action with its share of the load.
type Weighted struct {
	Action Action
	Weight int
}

// DefaultActions is the mix of the load: mostly revocations and consistent
// reads of them, some join-token traffic.
func DefaultActions() []Weighted {
	return []Weighted{
		{RevokeNew{}, 34},
		{RevokeAgain{}, 8},
		{ReadRevocation{}, 26},
		{ListRevocations{}, 8},
		{CreateToken{}, 9},
		{ListTokens{}, 6},
		{RevokeToken{}, 5},
		{Register{}, 6},
		{RevokeThenRead{}, 4},
		{CreateThenUse{}, 3},
		{SetPolicy{}, 2},
		{VerifyToken{}, 5},
		{RevokeMinted{}, 2},
	}
}

// RevokeThenRead revokes a new key, then reads it at once with a consistent
// read through the next server.
type RevokeThenRead struct{ RevokeNew }

func (RevokeThenRead) Next(done Op, _ *rand.Rand) (Action, bool) {
	return readKey(done.Key), done.Result == ResOK
}

// readKey reads one given key with a consistent read.
type readKey string

func (readKey) Kind() OpKind                   { return OpReadRevocation }
func (k readKey) Prepare(*rand.Rand, *Keys) Op { return Op{Key: string(k)} }
func (readKey) Do(ctx context.Context, api API, op Op) (Op, error) {
	return ReadRevocation{}.Do(ctx, api, op)
}

// CreateThenUse makes a token, then at once, through the next server,
// registers a node with it or revokes it.
type CreateThenUse struct{ CreateToken }

func (CreateThenUse) Next(done Op, rng *rand.Rand) (Action, bool) {
	if done.Result != ResOK {
		return nil, false
	}
	if rng.IntN(2) == 0 {
		return revokeRef(done.Ref), true
	}
	return registerWith{ref: done.Ref, secret: done.secret}, true
}

// revokeRef revokes one given token.
type revokeRef string

func (revokeRef) Kind() OpKind                   { return OpTokenRevoke }
func (r revokeRef) Prepare(*rand.Rand, *Keys) Op { return Op{Ref: string(r)} }
func (revokeRef) Do(ctx context.Context, api API, op Op) (Op, error) {
	return RevokeToken{}.Do(ctx, api, op)
}

// registerWith registers a new node with one given token.
type registerWith struct{ ref, secret string }

func (registerWith) Kind() OpKind { return OpTokenConsume }
func (r registerWith) Prepare(_ *rand.Rand, keys *Keys) Op {
	return Op{Node: fmt.Sprintf("%s%d", NodePrefix, keys.next()), Ref: r.ref, secret: r.secret}
}
func (registerWith) Do(ctx context.Context, api API, op Op) (Op, error) {
	return Register{}.Do(ctx, api, op)
}

// RevokeNew revokes a key never written before.
type RevokeNew struct{}

func (RevokeNew) Kind() OpKind { return OpRevoke }
func (RevokeNew) Prepare(rng *rand.Rand, keys *Keys) Op {
	return Op{Key: keys.NewRevocation(newKind(rng))}
}
func (RevokeNew) Do(ctx context.Context, api API, op Op) (Op, error) { return doRevoke(ctx, api, op) }

// RevokeAgain revokes a key written before (usually answered "exists").
type RevokeAgain struct{}

func (RevokeAgain) Kind() OpKind { return OpRevoke }
func (RevokeAgain) Prepare(rng *rand.Rand, keys *Keys) Op {
	if key := keys.AnyRevocation(rng, rng.IntN(2) == 0); key != "" {
		return Op{Key: key}
	}
	return RevokeNew{}.Prepare(rng, keys)
}
func (RevokeAgain) Do(ctx context.Context, api API, op Op) (Op, error) { return doRevoke(ctx, api, op) }

func doRevoke(ctx context.Context, api API, op Op) (Op, error) {
	kind, id := SplitKey(op.Key)
	_, err := api.Revoke(ctx, kmapi.RevokeRequest{Kind: kind, ID: id, Reason: "chaos"})
	switch {
	case err == nil:
		op.Result = ResOK
	case isAPI(err, http.StatusConflict, "exists"):
		op.Result = ResExists
	default:
		return op, err
	}
	return op, nil
}

// ReadRevocation reads one key with a consistent read: mostly a key written
// before (often one of the newest), sometimes one never written.
type ReadRevocation struct{}

func (ReadRevocation) Kind() OpKind { return OpReadRevocation }
func (ReadRevocation) Prepare(rng *rand.Rand, keys *Keys) Op {
	if key := keys.AnyRevocation(rng, rng.IntN(2) == 0); key != "" && rng.IntN(5) > 0 {
		return Op{Key: key}
	}
	kind := RevocationKinds[rng.IntN(len(RevocationKinds))]
	id := fmt.Sprintf("unwritten-%d", keys.next())
	if kind == "cert" {
		id = fmt.Sprintf("bad%08x", keys.next())
	}
	return Op{Key: kind + "/" + id}
}
func (ReadRevocation) Do(ctx context.Context, api API, op Op) (Op, error) {
	kind, id := SplitKey(op.Key)
	_, found, err := api.Revocation(ctx, kind, id, true)
	if err != nil {
		return op, err
	}
	op.Result = ResAbsent
	if found {
		op.Result = ResPresent
	}
	return op, nil
}

// ListRevocations lists every revocation of ListedKind with a consistent
// read.
type ListRevocations struct{}

func (ListRevocations) Kind() OpKind                 { return OpListRevocations }
func (ListRevocations) Prepare(*rand.Rand, *Keys) Op { return Op{Key: ListedKind} }
func (ListRevocations) Do(ctx context.Context, api API, op Op) (Op, error) {
	revs, err := api.Revocations(ctx, op.Key, true)
	if err != nil {
		return op, err
	}
	op.Values = make([]string, 0, len(revs))
	for _, r := range revs {
		op.Values = append(op.Values, string(r.Kind)+"/"+r.ID)
	}
	op.Result = ResOK
	return op, nil
}

// CreateToken makes a node join token of 1 to 3 uses; its description is
// the key.
type CreateToken struct{}

func (CreateToken) Kind() OpKind { return OpTokenCreate }
func (CreateToken) Prepare(rng *rand.Rand, keys *Keys) Op {
	return Op{Key: fmt.Sprintf("%s%d", TokenPrefix, keys.next()), Uses: 1 + rng.IntN(3)}
}
func (CreateToken) Do(ctx context.Context, api API, op Op) (Op, error) {
	tok, err := api.CreateJoinToken(ctx, kmapi.CreateJoinTokenRequest{
		Kind: "node", Principal: fsm.PrincipalNode, Uses: op.Uses, TTL: "2h", Description: op.Key})
	if err != nil {
		return op, err
	}
	op.Ref, op.Result, op.secret = tok.ID, ResOK, tok.Secret
	return op, nil
}

// ListTokens lists the join tokens from the server's local replica (a
// possibly stale read).
type ListTokens struct{}

func (ListTokens) Kind() OpKind                 { return OpTokenList }
func (ListTokens) Prepare(*rand.Rand, *Keys) Op { return Op{} }
func (ListTokens) Do(ctx context.Context, api API, op Op) (Op, error) {
	toks, err := api.JoinTokens(ctx)
	if err != nil {
		return op, err
	}
	op.Tokens = tokenViews(toks)
	op.Result = ResOK
	return op, nil
}

// tokenViews keeps the load's tokens of a list.
func tokenViews(toks []kmapi.JoinTokenInfo) []TokenView {
	out := []TokenView{}
	for _, t := range toks {
		if strings.HasPrefix(t.Description, TokenPrefix) {
			out = append(out, TokenView{Key: t.Description, Ref: t.ID, Uses: t.Uses, Used: t.Used, Revoked: t.Revoked})
		}
	}
	return out
}

// RevokeToken revokes a token made before (often one just made, maybe
// through another server), sometimes one that never existed.
type RevokeToken struct{}

func (RevokeToken) Kind() OpKind { return OpTokenRevoke }
func (RevokeToken) Prepare(rng *rand.Rand, keys *Keys) Op {
	if ref := keys.AnyToken(rng, rng.IntN(2) == 0); ref != "" && rng.IntN(10) > 0 {
		return Op{Ref: ref}
	}
	return Op{Ref: fmt.Sprintf("ghost%d", keys.next())}
}
func (RevokeToken) Do(ctx context.Context, api API, op Op) (Op, error) {
	err := api.RevokeJoinToken(ctx, op.Ref)
	switch {
	case err == nil:
		op.Result = ResOK
	case isAPI(err, http.StatusConflict, "exists"):
		op.Result = ResExists
	case isAPI(err, http.StatusNotFound, "not_found"):
		op.Result = ResNotFound
	default:
		return op, err
	}
	return op, nil
}

// Register registers a new node with a join token, which spends one of its
// uses: mostly a token made before (often one just made), sometimes one
// that does not exist. The node's key is made here, as a node would.
type Register struct {
	// Rand is the source of the node keys; nil means crypto/rand.
	Rand io.Reader
}

// NodePrefix starts the node id of every node the load registers.
const NodePrefix = "chaos-node-"

func (Register) Kind() OpKind { return OpTokenConsume }
func (Register) Prepare(rng *rand.Rand, keys *Keys) Op {
	op := Op{Node: fmt.Sprintf("%s%d", NodePrefix, keys.next())}
	if ref := keys.AnyToken(rng, rng.IntN(2) == 0); ref != "" && rng.IntN(10) > 0 {
		op.Ref, op.secret = ref, keys.secret(ref)
		return op
	}
	n := keys.next()
	op.Ref, op.secret = fmt.Sprintf("ghost%d", n), fmt.Sprintf("kmjt.ghost-%d", n)
	return op
}
func (a Register) Do(ctx context.Context, api API, op Op) (Op, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), a.Rand)
	if err != nil {
		return op, err
	}
	csr, err := x509.CreateCertificateRequest(a.Rand, &x509.CertificateRequest{Subject: pkix.Name{CommonName: op.Node}}, key)
	if err != nil {
		return op, err
	}
	resp, err := api.Register(ctx, kmapi.RegisterRequest{CSR: csr, NodeID: op.Node, Token: op.secret})
	switch {
	case err == nil && len(resp.Chain) > 0:
		op.Result, op.Serial = ResOK, resp.Registration.Serial
	case err == nil:
		return op, fmt.Errorf("chaos: registration %s with a token is %s, without a certificate", resp.Registration.ID, resp.Registration.Status)
	case isAPI(err, http.StatusForbidden, "token_exhausted"):
		op.Result = ResExhausted
	case isAPI(err, http.StatusForbidden, "token_revoked"):
		op.Result = ResRevoked
	case isAPI(err, http.StatusForbidden, "token_not_found"):
		op.Result = ResNotFound
	default:
		return op, err
	}
	return op, nil
}

// nodeViews keeps the load's registrations of a list.
func nodeViews(regs []kmapi.RegistrationInfo) []NodeView {
	var out []NodeView
	for _, r := range regs {
		if strings.HasPrefix(r.NodeID, NodePrefix) {
			out = append(out, NodeView{Node: r.NodeID, Status: r.Status, Issuer: r.Issuer, Serial: r.Serial})
		}
	}
	return out
}

func isAPI(err error, status int, code string) bool {
	var ae *kmapi.APIError
	return errors.As(err, &ae) && ae.Status == status && ae.Code == code
}

// classify turns an error without a definite answer into an outcome, and
// says whether the client should try another server next.
func classify(err error, write bool) (outcome Outcome, failover bool) {
	if err == nil {
		return OK, false
	}
	var ae *kmapi.APIError
	if errors.As(err, &ae) {
		if ae.Status < 500 {
			return Fail, false // refused before reaching the log
		}
		if write {
			return Unknown, true
		}
		return Fail, true
	}
	if notSent(err) {
		return Fail, true
	}
	if write {
		return Unknown, true
	}
	return Fail, true
}

// notSent reports whether a request failed while connecting, so that no
// byte of it reached a server.
func notSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// LoadConfig shapes the load.
type LoadConfig struct {
	// Clients is how many clients run at once; default 6.
	Clients int
	// Rate is the operations per second over all clients; default 100.
	Rate float64
	// Actions is the mix; default DefaultActions().
	Actions []Weighted
	// Seed makes the choice of operations repeatable.
	Seed uint64
	// MaxOps bounds the operations of one client; default 1,000,000.
	MaxOps int
	// FirstClient is the client id of the first client; later ones follow.
	FirstClient int
}

func (c LoadConfig) withDefaults() LoadConfig {
	if c.Clients == 0 {
		c.Clients = 6
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Actions == nil {
		c.Actions = DefaultActions()
	}
	if c.MaxOps == 0 {
		c.MaxOps = 1_000_000
	}
	return c
}

func (c LoadConfig) validate() error {
	if c.Clients < 1 || c.Clients > 256 {
		return fmt.Errorf("chaos: load clients must be 1 to 256, not %d", c.Clients)
	}
	if c.Rate <= 0 || c.Rate > 10000 {
		return fmt.Errorf("chaos: load rate must be above 0 and at most 10000 ops/s, not %g", c.Rate)
	}
	total := 0
	for _, w := range c.Actions {
		if w.Weight < 0 || w.Action == nil {
			return errors.New("chaos: every action needs a non-negative weight")
		}
		total += w.Weight
	}
	if total == 0 {
		return errors.New("chaos: the actions' weights add up to zero")
	}
	return nil
}

// Load runs clients against a Target until Stop.
type Load struct {
	cfg    LoadConfig
	target Target
	rec    *Recorder
	keys   *Keys
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartLoad starts cfg.Clients clients. Client i prefers server i modulo
// the number of servers and moves to the next running server after a
// connection error or an answer without a definite outcome.
func StartLoad(cfg LoadConfig, target Target, rec *Recorder, keys *Keys) (*Load, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(target.Servers()) == 0 {
		return nil, errors.New("chaos: the target has no servers")
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, target: target, rec: rec, keys: keys, cancel: cancel}
	interval := time.Duration(float64(cfg.Clients) / cfg.Rate * float64(time.Second))
	for i := range cfg.Clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client(ctx, cfg.FirstClient+i, i, interval)
		}()
	}
	return l, nil
}

// Stop ends the load and waits for the operations in flight to complete.
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *Load) client(ctx context.Context, id, i int, interval time.Duration) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(id)))
	servers := l.target.Servers()
	cur := i % len(servers)
	total := 0
	for _, w := range l.cfg.Actions {
		total += w.Weight
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; n < l.cfg.MaxOps; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !l.target.Up(servers[cur]) {
			cur = nextUp(l.target, servers, cur)
		}
		a := pick(l.cfg.Actions, total, rng)
		// In-flight operations finish after Stop: their client timeout
		// bounds them, and a completed answer is worth more than an unknown.
		done, failover := Run(context.Background(), a, l.target, servers[cur], id, rng, l.keys, l.rec)
		if c, ok := a.(Chained); ok && done.Outcome == OK {
			if next, ok := c.Next(done, rng); ok {
				other := nextUp(l.target, servers, cur)
				Run(context.Background(), next, l.target, servers[other], id, rng, l.keys, l.rec)
			}
		}
		if failover {
			cur = nextUp(l.target, servers, cur)
		}
	}
}

// Run records one operation of a through server. It returns the operation
// as recorded and whether the client should move to another server.
func Run(ctx context.Context, a Action, target Target, server string, client int, rng *rand.Rand, keys *Keys, rec *Recorder) (done Op, failover bool) {
	op := a.Prepare(rng, keys)
	op.Kind, op.Client, op.Server = a.Kind(), client, server
	id := rec.Begin(op)
	api, err := target.API(server)
	if err != nil {
		op.Outcome, op.Err = Fail, err.Error()
		rec.End(id, op)
		return op, true
	}
	res, err := a.Do(ctx, api, op)
	res.Outcome, failover = classify(err, op.Kind.IsWrite())
	if err != nil {
		res.Err = err.Error()
	}
	rec.End(id, res)
	if res.Kind == OpTokenCreate && res.Outcome == OK {
		keys.AddToken(res.Ref, res.secret)
	}
	if res.Kind == OpPolicySet && res.Outcome == OK && res.Result == ResOK {
		for cur := keys.policyVersion.Load(); cur < res.Version && !keys.policyVersion.CompareAndSwap(cur, res.Version); cur = keys.policyVersion.Load() {
		}
	}
	return res, failover
}

func pick(actions []Weighted, total int, rng *rand.Rand) Action {
	n := rng.IntN(total)
	for _, w := range actions {
		if n < w.Weight {
			return w.Action
		}
		n -= w.Weight
	}
	return actions[len(actions)-1].Action
}

// nextUp returns the index of the next running server after cur (cur
// itself when no other runs).
func nextUp(t Target, servers []string, cur int) int {
	for k := 1; k <= len(servers); k++ {
		j := (cur + k) % len(servers)
		if t.Up(servers[j]) {
			return j
		}
	}
	return cur
}
