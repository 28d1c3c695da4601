package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// MintedKey is the revocation key of a minted token's jti.
func MintedKey(jti string) string { return "token/" + jti }

// mintOrPick mints a new token (one time in three, or when none exists)
// or picks one minted before; ok is false when the load has no minter.
func (k *Keys) mintOrPick(rng *rand.Rand) (token, jti string, ok bool) {
	k.mu.Lock()
	mint := k.mint
	if mint != nil && len(k.jtis) > 0 && rng.IntN(3) != 0 {
		jti = pickKey(rng, k.jtis, rng.IntN(2) == 0)
		token = k.minted[jti]
		k.mu.Unlock()
		return token, jti, true
	}
	k.mu.Unlock()
	if mint == nil {
		return "", "", false
	}
	token, jti, err := mint()
	if err != nil {
		return "", "", false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.minted == nil {
		k.minted = map[string]string{}
	}
	k.minted[jti] = token
	k.jtis = append(k.jtis, jti)
	return token, jti, true
}

// VerifyToken asks a root server to verify a token the load minted (its
// local replica answers: the history records the answer; CheckVerifies and
// the final check judge it).
type VerifyToken struct{}

func (VerifyToken) Kind() OpKind { return OpTokenVerify }
func (VerifyToken) Prepare(rng *rand.Rand, keys *Keys) Op {
	token, jti, ok := keys.mintOrPick(rng)
	if !ok {
		return Op{}
	}
	return Op{Key: MintedKey(jti), secret: token}
}
func (VerifyToken) Do(ctx context.Context, api API, op Op) (Op, error) {
	if op.secret == "" {
		op.Result = "skipped" // the load has no minter (the in-memory fake)
		return op, nil
	}
	v, err := api.Verify(ctx, op.secret, "")
	if err != nil {
		return op, err
	}
	op.Result = ResValid
	if !v.Valid {
		op.Result, op.Values = ResRefused, []string{v.Reason}
	}
	return op, nil
}

// AgentVerifier is a node agent's local verify call.
type AgentVerifier struct {
	Name string
	// Verify answers whether token is valid, or why the agent refuses it;
	// err means the agent gave no answer.
	Verify func(ctx context.Context, token string) (valid bool, reason string, err error)
}

// VerifyAtAgent asks a node agent (one of Agents, picked by the load's
// random source) to verify a token the load minted. The agent answers from
// its own copy of the trust state, whatever the roots go through; its
// operation is recorded with the agent as the server. Agents acknowledge
// no revocation, so CheckVerifies holds them to "never refuse a token
// nobody tried to revoke"; that they refuse every acknowledged revocation
// in the end is CheckAgents' part.
type VerifyAtAgent struct{ Agents []AgentVerifier }

func (VerifyAtAgent) Kind() OpKind { return OpTokenVerify }
func (a VerifyAtAgent) Prepare(rng *rand.Rand, keys *Keys) Op {
	op := VerifyToken{}.Prepare(rng, keys)
	if len(a.Agents) > 0 {
		op.via = rng.IntN(len(a.Agents))
	}
	return op
}
func (a VerifyAtAgent) Do(ctx context.Context, _ API, op Op) (Op, error) {
	if op.secret == "" || len(a.Agents) == 0 {
		op.Result = "skipped"
		return op, nil
	}
	ag := a.Agents[op.via]
	op.Server = ag.Name
	valid, reason, err := ag.Verify(ctx, op.secret)
	if err != nil {
		return op, err
	}
	op.Result = ResValid
	if !valid {
		op.Result, op.Values = ResRefused, []string{reason}
	}
	return op, nil
}

// RevokeMinted revokes the jti of a token the load minted: a revocation
// like any other for the revocation model, and what the verifies see.
type RevokeMinted struct{}

func (RevokeMinted) Kind() OpKind { return OpRevoke }
func (RevokeMinted) Prepare(rng *rand.Rand, keys *Keys) Op {
	_, jti, ok := keys.mintOrPick(rng)
	if !ok {
		return RevokeNew{}.Prepare(rng, keys)
	}
	key := MintedKey(jti)
	keys.mu.Lock()
	keys.revs = append(keys.revs, key)
	keys.mu.Unlock()
	return Op{Key: key}
}
func (RevokeMinted) Do(ctx context.Context, api API, op Op) (Op, error) {
	return doRevoke(ctx, api, op)
}

// CheckVerifies checks what root servers answered for minted tokens: a
// server that acknowledged a token's revocation refuses it from then on
// (it applied the revocation before it answered), and every refusal of a
// token nobody tried to revoke is a violation too.
func CheckVerifies(ops []Op) []Violation {
	ackedAt := map[string]map[string]int64{} // key -> server -> earliest return
	invoked := map[string]bool{}
	for _, op := range ops {
		if op.Kind != OpRevoke {
			continue
		}
		invoked[op.Key] = true
		if op.Outcome == OK && (op.Result == ResOK || op.Result == ResExists) {
			if ackedAt[op.Key] == nil {
				ackedAt[op.Key] = map[string]int64{}
			}
			if t, ok := ackedAt[op.Key][op.Server]; !ok || int64(op.Return) < t {
				ackedAt[op.Key][op.Server] = int64(op.Return)
			}
		}
	}
	var vs []Violation
	for _, op := range ops {
		if op.Kind != OpTokenVerify || op.Outcome != OK {
			continue
		}
		if t, ok := ackedAt[op.Key][op.Server]; ok && op.Result == ResValid && int64(op.Call) > t {
			vs = append(vs, Violation{"verify", fmt.Sprintf("%s accepted %s at %s after it acknowledged its revocation at %s", op.Server, op.Key, op.Call, time.Duration(t))})
		}
		if op.Result == ResRefused && !invoked[op.Key] {
			vs = append(vs, Violation{"verify", fmt.Sprintf("%s refused %s (%v) though nobody revoked it", op.Server, op.Key, op.Values)})
		}
	}
	return vs
}
