package fsm

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// payload is a command's payload: check validates it without the state (and
// may normalise it); apply checks it against the state and then changes the
// state. apply must not change anything before it is sure to succeed.
type payload interface {
	check(now time.Time) *CommandError
	apply(tx *txn) *CommandError
}

// newPayload returns a new payload value for a known type, nil otherwise.
func newPayload(t MsgType) payload {
	switch t &^ IgnoreUnknownFlag {
	case MsgServerPut:
		return new(ServerPut)
	case MsgServerRemove:
		return new(ServerRemove)
	case MsgIssuerPut:
		return new(IssuerPut)
	case MsgJoinTokenCreate:
		return new(JoinTokenCreate)
	case MsgJoinTokenConsume:
		return new(JoinTokenConsume)
	case MsgJoinTokenRevoke:
		return new(JoinTokenRevoke)
	case MsgRevoke:
		return new(Revoke)
	case MsgPruneRevocations:
		return new(PruneRevocations)
	case MsgTrustAnchorPut:
		return new(TrustAnchorPut)
	case MsgJWKPut:
		return new(JWKPut)
	case MsgRegistrationCreate:
		return new(RegistrationCreate)
	case MsgRegistrationApprove:
		return new(RegistrationApprove)
	case MsgRegistrationDeny:
		return new(RegistrationDeny)
	case MsgPolicySet:
		return new(PolicySet)
	case MsgRouteAuthPut:
		return new(RouteAuthPut)
	case MsgCAUpdate:
		return new(CAUpdate)
	case MsgRouteAuthDelete:
		return new(RouteAuthDelete)
	case MsgTrustAnchorDelete:
		return new(TrustAnchorDelete)
	case MsgNodeCertRenew:
		return new(NodeCertRenew)
	case MsgGenesis:
		return new(Genesis)
	case MsgExclusiveSet:
		return new(ExclusiveSet)
	}
	return nil
}

// nilIfEmpty makes empty lists nil, so that a record reads the same after
// a snapshot round trip.
func nilIfEmpty[E any](s []E) []E {
	if len(s) == 0 {
		return nil
	}
	return s
}

// ---- servers ----

// ServerPut adds or updates a root server record (MsgServerPut).
type ServerPut struct {
	Server Server `json:"server"`
}

func (p *ServerPut) check(time.Time) *CommandError {
	s := &p.Server
	if err := checkWord("server.name", s.Name, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkWord("server.raft_addr", s.RaftAddr, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkWord("server.api_addr", s.APIAddr, MaxIDLen, true); err != nil {
		return err
	}
	return checkOneOf("server.status", s.Status, ServerJoining, ServerVoter, ServerRemoved)
}

func (p *ServerPut) apply(tx *txn) *CommandError {
	put(tx, &tx.st.servers, tServers, p.Server.Name, p.Server)
	return nil
}

// ServerRemove deletes a root server record (MsgServerRemove); ErrNotFound
// if there is none.
type ServerRemove struct {
	Name string `json:"name"`
}

func (p *ServerRemove) check(time.Time) *CommandError {
	return checkWord("name", p.Name, MaxIDLen, true)
}

func (p *ServerRemove) apply(tx *txn) *CommandError {
	if _, ok := tx.st.servers.m[p.Name]; !ok {
		return fail(ErrNotFound, "server %q", p.Name)
	}
	del(tx, &tx.st.servers, tServers, p.Name)
	return nil
}

// ---- CA ----

func checkCA(ca *CA) *CommandError {
	ca.Prepared, ca.Retired, ca.CrossSigns = nilIfEmpty(ca.Prepared), nilIfEmpty(ca.Retired), nilIfEmpty(ca.CrossSigns)
	if err := checkNetwork("ca.network", ca.Network); err != nil {
		return err
	}
	if err := checkDER("ca.active", ca.Active, true); err != nil {
		return err
	}
	for _, l := range []struct {
		name string
		list [][]byte
	}{{"ca.prepared", ca.Prepared}, {"ca.retired", ca.Retired}, {"ca.cross_signs", ca.CrossSigns}} {
		if err := checkDERList(l.name, l.list, 0); err != nil {
			return err
		}
	}
	if len(ca.SealedKey) == 0 {
		return fail(ErrInvalid, "ca.sealed_key is required")
	}
	if len(ca.SealedKey) > MaxSealedKeyLen {
		return fail(ErrInvalid, "ca.sealed_key is %d bytes, limit %d", len(ca.SealedKey), MaxSealedKeyLen)
	}
	if err := checkOptionalASN("ca.asn", ca.ASN); err != nil {
		return err
	}
	return checkGossipKeys(ca.GossipKeys)
}

// checkGossipKeys: at most MaxGossipKeys, distinct ids, each sealed, the
// primary (exactly one when there are keys) first, at most one installed.
func checkGossipKeys(keys []GossipKey) *CommandError {
	if len(keys) > MaxGossipKeys {
		return fail(ErrInvalid, "ca.gossip_keys has %d keys, limit %d", len(keys), MaxGossipKeys)
	}
	seen, installed := map[string]bool{}, false
	for i, k := range keys {
		if k.ID == "" || len(k.ID) > 64 || seen[k.ID] {
			return fail(ErrInvalid, "ca.gossip_keys[%d]: an id is required, unique, at most 64 bytes", i)
		}
		seen[k.ID] = true
		if len(k.Sealed) == 0 || len(k.Sealed) > MaxSealedKeyLen {
			return fail(ErrInvalid, "ca.gossip_keys[%d].sealed: 1 to %d bytes", i, MaxSealedKeyLen)
		}
		switch {
		case (k.State == GossipKeyPrimary) != (i == 0):
			return fail(ErrInvalid, "ca.gossip_keys: the primary key, and only it, comes first")
		case k.State == GossipKeyInstalled:
			if installed {
				return fail(ErrInvalid, "ca.gossip_keys: at most one key is being installed")
			}
			installed = true
		case k.State != GossipKeyPrimary && k.State != GossipKeyRetiring:
			return fail(ErrInvalid, "ca.gossip_keys[%d].state %q: primary, installed or retiring", i, k.State)
		}
	}
	return nil
}

// Genesis is a network's first state, proposed once by the bootstrap of
// its first root server (MsgGenesis): the network's CA and, for that
// server, its issuing certificate, its server record (a voter), the
// network's own trust anchor, the bootstrap root-join token and the admin
// credential's key. Only the CA is required. It applies to an empty state
// only (ErrExists otherwise), and all of it or nothing: a cluster never
// holds a CA without the server that serves it. It sets Store.Network.
type Genesis struct {
	CA     CA           `json:"ca"`
	Issuer *Issuer      `json:"issuer,omitempty"`
	Server *Server      `json:"server,omitempty"`
	Anchor *TrustAnchor `json:"anchor,omitempty"`
	Token  *JoinToken   `json:"token,omitempty"`
	Key    *JWK         `json:"key,omitempty"`
}

func (p *Genesis) check(now time.Time) *CommandError {
	if err := checkCA(&p.CA); err != nil {
		return err
	}
	network := p.CA.Network
	if p.Issuer != nil {
		ip := IssuerPut{Issuer: *p.Issuer}
		if err := ip.check(now); err != nil {
			return err
		}
		if ip.Issuer.Network != network || ip.Issuer.Status != IssuerActive {
			return fail(ErrInvalid, "the genesis issuer must be active in network %q", network)
		}
		*p.Issuer = ip.Issuer
	}
	if p.Server != nil {
		sp := ServerPut{Server: *p.Server}
		if err := sp.check(now); err != nil {
			return err
		}
		if sp.Server.Status != ServerVoter || p.Issuer == nil || p.Issuer.ID != sp.Server.Name {
			return fail(ErrInvalid, "the genesis server must be a voter with the genesis issuer")
		}
		*p.Server = sp.Server
	}
	if p.Anchor != nil {
		ap := TrustAnchorPut{Anchor: *p.Anchor}
		if err := ap.check(now); err != nil {
			return err
		}
		if ap.Anchor.Network != network {
			return fail(ErrInvalid, "the genesis anchor is network %q's own, not %q", network, ap.Anchor.Network)
		}
		*p.Anchor = ap.Anchor
	}
	if p.Token != nil {
		tp := JoinTokenCreate{Token: *p.Token}
		if err := tp.check(now); err != nil {
			return err
		}
		if tp.Token.Kind != TokenKindRoot || len(tp.Token.DNSNames) != 0 {
			return fail(ErrInvalid, "the genesis join token is a root-join token, without DNS names")
		}
		*p.Token = tp.Token
	}
	if p.Key != nil {
		kp := JWKPut{Key: *p.Key}
		if err := kp.check(now); err != nil {
			return err
		}
		if p.Server == nil || kp.Key.Node != p.Server.Name {
			return fail(ErrInvalid, "the genesis key belongs to the genesis server")
		}
		*p.Key = kp.Key
	}
	return nil
}

func (p *Genesis) apply(tx *txn) *CommandError {
	st := tx.st
	if st.network != "" || len(st.cas.m)+len(st.servers.m)+len(st.issuers.m)+len(st.tokens.m)+len(st.anchors.m)+
		len(st.nodes.m)+len(st.jwks.m)+len(st.regs.m)+st.revs.set.len()+len(st.routes.m)+len(st.issued.m) != 0 {
		return fail(ErrExists, "the state is not empty; a genesis is a network's first command")
	}
	// On an empty state, with check's consistency rules held, none of the
	// parts below can fail: nothing is changed unless all of it applies.
	put(tx, &st.cas, tCAs, p.CA.Network, p.CA)
	st.network = p.CA.Network
	if p.Issuer != nil {
		put(tx, &st.issuers, tIssuers, p.Issuer.ID, *p.Issuer)
	}
	if p.Server != nil {
		put(tx, &st.servers, tServers, p.Server.Name, *p.Server)
	}
	if p.Anchor != nil {
		put(tx, &st.anchors, tAnchors, p.Anchor.Network, *p.Anchor)
	}
	if p.Token != nil {
		put(tx, &st.tokens, tTokens, p.Token.Hash, *p.Token)
		tx.s.tokenIDs[p.Token.ID] = p.Token.Hash
	}
	if p.Key != nil {
		tx.putKey(*p.Key)
	}
	return nil
}

// CAUpdate replaces a network's CA record (MsgCAUpdate), e.g. to move roots
// through prepared, active and retired, or to set the network's AS number
// (CA.ASN: 0, none, or one CheckASN takes). ExpectModifyIndex must equal the
// record's ModifyIndex (compare-and-set), else ErrConflict; ErrNotFound if
// the network has no CA.
type CAUpdate struct {
	CA                CA     `json:"ca"`
	ExpectModifyIndex uint64 `json:"expect_modify_index"`
}

func (p *CAUpdate) check(time.Time) *CommandError { return checkCA(&p.CA) }

func (p *CAUpdate) apply(tx *txn) *CommandError {
	cur, ok := tx.st.cas.m[p.CA.Network]
	if !ok {
		return fail(ErrNotFound, "network %q has no CA", p.CA.Network)
	}
	if cur.ModifyIndex != p.ExpectModifyIndex {
		return fail(ErrConflict, "CA of %q is at modify index %d, not %d", p.CA.Network, cur.ModifyIndex, p.ExpectModifyIndex)
	}
	put(tx, &tx.st.cas, tCAs, p.CA.Network, p.CA)
	return nil
}

// IssuerPut adds or updates a root server's issuing certificate
// (MsgIssuerPut). The network must have a CA (ErrNotFound); a revoked
// issuer stays revoked (ErrConflict).
type IssuerPut struct {
	Issuer Issuer `json:"issuer"`
}

func (p *IssuerPut) check(time.Time) *CommandError {
	is := &p.Issuer
	if err := checkWord("issuer.id", is.ID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkNetwork("issuer.network", is.Network); err != nil {
		return err
	}
	if err := checkDER("issuer.cert", is.Cert, true); err != nil {
		return err
	}
	return checkOneOf("issuer.status", is.Status, IssuerActive, IssuerRevoked)
}

func (p *IssuerPut) apply(tx *txn) *CommandError {
	if _, ok := tx.st.cas.m[p.Issuer.Network]; !ok {
		return fail(ErrNotFound, "network %q has no CA", p.Issuer.Network)
	}
	if cur, ok := tx.st.issuers.m[p.Issuer.ID]; ok && cur.Status == IssuerRevoked && p.Issuer.Status != IssuerRevoked {
		return fail(ErrConflict, "issuer %q is revoked", p.Issuer.ID)
	}
	put(tx, &tx.st.issuers, tIssuers, p.Issuer.ID, p.Issuer)
	return nil
}

// ---- join tokens ----

// JoinTokenCreate records a join token (MsgJoinTokenCreate). Used must be 0,
// Revoked false and Expiry after the command's time; ErrExists if the hash
// or the id is taken.
type JoinTokenCreate struct {
	Token JoinToken `json:"token"`
}

func (p *JoinTokenCreate) check(now time.Time) *CommandError {
	t := &p.Token
	if err := checkWord("token.id", t.ID, 64, true); err != nil {
		return err
	}
	if err := checkHash("token.hash", t.Hash); err != nil {
		return err
	}
	if err := checkOneOf("token.kind", t.Kind, TokenKindRoot, TokenKindNode); err != nil {
		return err
	}
	if err := checkPrincipal("token.principal", t.Principal, false); err != nil {
		return err
	}
	if err := checkWord("token.node_id", t.NodeID, MaxIDLen, false); err != nil {
		return err
	}
	if t.Uses < 1 || t.Uses > MaxTokenUses {
		return fail(ErrInvalid, "token.uses %d is outside 1..%d", t.Uses, MaxTokenUses)
	}
	if t.Used != 0 || t.Revoked {
		return fail(ErrInvalid, "a new token has used 0 and is not revoked")
	}
	if err := checkTime("token.expiry", t.Expiry, true); err != nil {
		return err
	}
	t.Expiry = normTime(t.Expiry)
	if !t.Expiry.After(now) {
		return fail(ErrInvalid, "token.expiry is not after the command time")
	}
	t.DNSNames = nilIfEmpty(t.DNSNames)
	if len(t.DNSNames) > 0 && t.Kind != TokenKindNode {
		return fail(ErrInvalid, "token.dns_names applies to node tokens only")
	}
	if err := checkDNSNames("token.dns_names", t.DNSNames); err != nil {
		return err
	}
	return checkText("token.description", t.Description, MaxTextLen, false)
}

func (p *JoinTokenCreate) apply(tx *txn) *CommandError {
	if _, ok := tx.st.tokens.m[p.Token.Hash]; ok {
		return fail(ErrExists, "a token with this hash exists")
	}
	if _, ok := tx.s.tokenIDs[p.Token.ID]; ok {
		return fail(ErrExists, "token id %q is taken", p.Token.ID)
	}
	for _, d := range p.Token.DNSNames {
		if strings.HasPrefix(d, "*.") || tx.st.network != "" && !strings.HasSuffix(d, "."+tx.st.network) {
			return fail(ErrInvalid, "token DNS name %s is not under the network's domain %s", d, tx.st.network)
		}
	}
	put(tx, &tx.st.tokens, tTokens, p.Token.Hash, p.Token)
	tx.s.tokenIDs[p.Token.ID] = p.Token.Hash
	return nil
}

// useToken returns the token with hash after one more use by a joiner of
// kind with nodeID, or why it may not be used. It changes nothing. The
// checks run in this order: not found, revoked, expired (the command time
// at or after Expiry), exhausted, kind, node id.
func (tx *txn) useToken(hash, kind, nodeID string) (JoinToken, *CommandError) {
	t, ok := tx.st.tokens.m[hash]
	switch {
	case !ok:
		return t, fail(ErrTokenNotFound, "no token with this hash")
	case t.Revoked:
		return t, fail(ErrTokenRevoked, "token %s", t.ID)
	case !tx.now.Before(t.Expiry):
		return t, fail(ErrTokenExpired, "token %s expired at %s", t.ID, t.Expiry.Format(time.RFC3339))
	case t.Used >= t.Uses:
		return t, fail(ErrTokenExhausted, "token %s was used %d of %d times", t.ID, t.Used, t.Uses)
	case t.Kind != kind:
		return t, fail(ErrTokenConstraint, "token %s is a %s token, not %s", t.ID, t.Kind, kind)
	case t.NodeID != "" && t.NodeID != nodeID:
		return t, fail(ErrTokenConstraint, "token %s is bound to another node id", t.ID)
	}
	t.Used++
	return t, nil
}

// JoinTokenConsume uses one use of a join token (MsgJoinTokenConsume). Kind
// is the joiner's kind (TokenKindRoot or TokenKindNode) and NodeID its node
// id or server name. Rejections: ErrTokenNotFound, ErrTokenRevoked,
// ErrTokenExpired, ErrTokenExhausted, ErrTokenConstraint.
type JoinTokenConsume struct {
	Hash   string `json:"hash"`
	Kind   string `json:"kind"`
	NodeID string `json:"node_id"`
}

func (p *JoinTokenConsume) check(time.Time) *CommandError {
	if err := checkHash("hash", p.Hash); err != nil {
		return err
	}
	if err := checkOneOf("kind", p.Kind, TokenKindRoot, TokenKindNode); err != nil {
		return err
	}
	return checkWord("node_id", p.NodeID, MaxIDLen, false)
}

func (p *JoinTokenConsume) apply(tx *txn) *CommandError {
	t, err := tx.useToken(p.Hash, p.Kind, p.NodeID)
	if err != nil {
		return err
	}
	put(tx, &tx.st.tokens, tTokens, t.Hash, t)
	return nil
}

// JoinTokenRevoke revokes a join token by its public id
// (MsgJoinTokenRevoke); ErrNotFound, or ErrExists if already revoked.
type JoinTokenRevoke struct {
	ID string `json:"id"`
}

func (p *JoinTokenRevoke) check(time.Time) *CommandError {
	return checkWord("id", p.ID, 64, true)
}

func (p *JoinTokenRevoke) apply(tx *txn) *CommandError {
	h, ok := tx.s.tokenIDs[p.ID]
	if !ok {
		return fail(ErrNotFound, "token %q", p.ID)
	}
	t := tx.st.tokens.m[h]
	if t.Revoked {
		return fail(ErrExists, "token %q is already revoked", p.ID)
	}
	t.Revoked = true
	put(tx, &tx.st.tokens, tTokens, h, t)
	return nil
}

// ---- revocations ----

// Revoke records a revocation (MsgRevoke); ErrExists if that kind and id
// is already revoked. Revocation.Time is set to the command time. Revoking
// a node also marks its node record revoked.
type Revoke struct {
	Revocation Revocation `json:"revocation"`
}

func (p *Revoke) check(now time.Time) *CommandError {
	r := &p.Revocation
	if revKindByte(r.Kind) == 0 {
		return fail(ErrInvalid, "revocation.kind %q is not one of cert, token, key, node", r.Kind)
	}
	if r.Kind == RevocationCert {
		if err := checkSerial("revocation.id", r.ID, true); err != nil {
			return err
		}
	} else if err := checkWord("revocation.id", r.ID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkText("revocation.reason", r.Reason, MaxTextLen, false); err != nil {
		return err
	}
	if err := checkTime("revocation.prune_after", r.PruneAfter, false); err != nil {
		return err
	}
	if r.Kind == RevocationNode && !r.PruneAfter.IsZero() {
		return fail(ErrInvalid, "a node's revocation is kept for good: its id must never come back (no prune_after)")
	}
	r.PruneAfter = normTime(r.PruneAfter)
	r.Time = now
	return nil
}

func (p *Revoke) apply(tx *txn) *CommandError {
	r := p.Revocation
	key := revKey(r.Kind, r.ID)
	if tx.st.revs.set.has(key) {
		return fail(ErrExists, "%s %q is already revoked", r.Kind, r.ID)
	}
	rec := revRec{reason: r.Reason, time: r.Time.UnixNano(), index: tx.index}
	if !r.PruneAfter.IsZero() {
		rec.pruneAfter = r.PruneAfter.UnixNano()
	}
	tx.st.revs.mut().add(key, rec)
	tx.touched(tRevs, key, false)
	if r.Kind == RevocationNode {
		if n, ok := tx.st.nodes.m[r.ID]; ok && n.Status != NodeRevoked {
			n.Status = NodeRevoked
			tx.putNode(n)
		}
	}
	return nil
}

// PruneRevocations drops revocations whose PruneAfter is before the command
// time, join tokens that are expired (command time at or after Expiry) or
// used up, and JWKS keys past their NotAfter (MsgPruneRevocations). With
// Issuance it also drops issued certificates past their NotAfter (no CRL
// lists them any more, and 158-bit random serials need no record to stay
// unique), approved registrations whose certificate is gone (nothing is left
// to collect), and pending or denied registrations created more than
// RegistrationRetention ago. It never fails.
type PruneRevocations struct {
	// Issuance is set by current proposers; commands of older ones leave
	// it false and prune as they did.
	Issuance bool `json:"issuance,omitempty"`
}

// RegistrationRetention is how long a pending or denied registration is
// kept: an operator has a week to approve a request, and a node a week to
// read why it was denied.
const RegistrationRetention = 7 * 24 * time.Hour

func (p *PruneRevocations) check(time.Time) *CommandError { return nil }

func (p *PruneRevocations) apply(tx *txn) *CommandError {
	now := tx.now.UnixNano()
	var revs, toks []string
	for k, r := range tx.st.revs.set.all() {
		if r.pruneAfter != 0 && r.pruneAfter < now {
			revs = append(revs, k)
		}
	}
	for h, t := range tx.st.tokens.m {
		if !tx.now.Before(t.Expiry) || t.Used >= t.Uses {
			toks = append(toks, h)
		}
	}
	var keys []string
	for kid, k := range tx.st.jwks.m {
		if !k.NotAfter.IsZero() && k.NotAfter.Before(tx.now) {
			keys = append(keys, kid)
		}
	}
	slices.Sort(revs)
	slices.Sort(toks)
	slices.Sort(keys)
	for _, kid := range keys {
		tx.delKey(kid)
	}
	for _, k := range revs {
		tx.st.revs.mut().del(k)
		tx.touched(tRevs, k, true)
	}
	for _, h := range toks {
		delete(tx.s.tokenIDs, tx.st.tokens.m[h].ID)
		del(tx, &tx.st.tokens, tTokens, h)
	}
	if p.Issuance {
		tx.pruneIssuance()
	}
	return nil
}

// pruneIssuance is the Issuance part of PruneRevocations.
func (tx *txn) pruneIssuance() {
	var certs, regs []string
	for k, c := range tx.st.issued.m {
		if c.NotAfter.Before(tx.now) {
			certs = append(certs, k)
		}
	}
	slices.Sort(certs)
	for _, k := range certs {
		del(tx, &tx.st.issued, tIssued, k)
	}
	horizon := tx.now.Add(-RegistrationRetention)
	for id, r := range tx.st.regs.m {
		switch r.Status {
		case RegistrationApproved:
			if _, ok := tx.st.issued.m[issuedKey(r.Issuer, r.Serial)]; !ok {
				regs = append(regs, id)
			}
		default:
			if !r.Created.IsZero() && r.Created.Before(horizon) {
				regs = append(regs, id)
			}
		}
	}
	slices.Sort(regs)
	for _, id := range regs {
		tx.delReg(id)
	}
}

// ---- trust anchors ----

// TrustAnchorPut adds or updates a network's trust anchor
// (MsgTrustAnchorPut): at least one root and an access list without
// duplicates. ExpectModifyIndex as in RouteAuthPut (the access list is
// read, changed and written back). It writes the record whole, Exclusive
// included, which only the own network's anchor may hold (ErrInvalid on
// a federated one).
type TrustAnchorPut struct {
	Anchor            TrustAnchor `json:"anchor"`
	ExpectModifyIndex *uint64     `json:"expect_modify_index,omitempty"`
}

func (p *TrustAnchorPut) check(time.Time) *CommandError {
	a := &p.Anchor
	a.Accept = nilIfEmpty(a.Accept)
	if err := checkNetwork("anchor.network", a.Network); err != nil {
		return err
	}
	if err := checkDERList("anchor.roots", a.Roots, 1); err != nil {
		return err
	}
	if err := checkUniqueWords("anchor.accept", a.Accept, MaxAcceptLen, 0, true); err != nil {
		return err
	}
	a.Endpoints, a.Keys = nilIfEmpty(a.Endpoints), nilIfEmpty(a.Keys)
	if err := checkUniqueWords("anchor.endpoints", a.Endpoints, MaxEndpoints, MaxIDLen, false); err != nil {
		return err
	}
	return checkFederatedKeys(a.Keys)
}

// checkFederatedKeys: at most MaxFederatedKeys, sorted by kid without
// repeats (one encoding of a set), each naming its node and holding a
// JWK. The chains are the roots' to check before proposing, and every
// verifier's at use.
func checkFederatedKeys(keys []FederatedKey) *CommandError {
	if len(keys) > MaxFederatedKeys {
		return fail(ErrInvalid, "anchor.keys has %d entries, limit %d", len(keys), MaxFederatedKeys)
	}
	for i, k := range keys {
		if err := checkWord("anchor.keys.kid", k.KID, MaxIDLen, true); err != nil {
			return err
		}
		if err := checkWord("anchor.keys.node", k.Node, MaxIDLen, true); err != nil {
			return err
		}
		if len(k.Key) == 0 || len(k.Key) > MaxJWKLen {
			return fail(ErrInvalid, "anchor.keys: the key of %s has %d bytes, want 1 to %d", k.KID, len(k.Key), MaxJWKLen)
		}
		if i > 0 && keys[i-1].KID >= k.KID {
			return fail(ErrInvalid, "anchor.keys: not sorted by kid without repeats at %s", k.KID)
		}
	}
	return nil
}

func (p *TrustAnchorPut) apply(tx *txn) *CommandError {
	cur, ok := tx.st.anchors.m[p.Anchor.Network]
	if err := checkExpect("the trust anchor of "+p.Anchor.Network, p.ExpectModifyIndex, cur.ModifyIndex, ok); err != nil {
		return err
	}
	if p.Anchor.Network == tx.st.network && (len(p.Anchor.Endpoints) > 0 || len(p.Anchor.Keys) > 0) {
		return fail(ErrInvalid, "the own network's anchor has no endpoints or federated keys: its keys are the JWKS")
	}
	if err := checkExclusiveOwn("anchor.exclusive", p.Anchor.Network, p.Anchor.Exclusive, tx.st.network); err != nil {
		return err
	}
	put(tx, &tx.st.anchors, tAnchors, p.Anchor.Network, p.Anchor)
	return nil
}

// checkExclusiveOwn refuses exclusive membership asked of network when
// it is not own, the state's network: a network decides what its own
// nodes accept, never what another network's do.
func checkExclusiveOwn(field, network string, exclusive bool, own string) *CommandError {
	if exclusive && network != own {
		return fail(ErrInvalid, "%s: exclusive membership is set on the own network's anchor (%q) only, not on federated network %q's", field, own, network)
	}
	return nil
}

// TrustAnchorDelete removes a federated network's trust anchor
// (MsgTrustAnchorDelete); ErrNotFound, or ErrConflict for this cluster's own
// network.
type TrustAnchorDelete struct {
	Network string `json:"network"`
}

func (p *TrustAnchorDelete) check(time.Time) *CommandError {
	return checkNetwork("network", p.Network)
}

func (p *TrustAnchorDelete) apply(tx *txn) *CommandError {
	if _, ok := tx.st.anchors.m[p.Network]; !ok {
		return fail(ErrNotFound, "trust anchor %q", p.Network)
	}
	if p.Network == tx.st.network {
		return fail(ErrConflict, "%q is this cluster's own network", p.Network)
	}
	del(tx, &tx.st.anchors, tAnchors, p.Network)
	return nil
}

// ExclusiveSet turns the exclusive membership of this cluster's own
// network on or off (MsgExclusiveSet): TrustAnchor.Exclusive of its
// anchor, the rest of the record as it is. Network must be the state's
// network (ErrInvalid for a federated one) and have an anchor
// (ErrNotFound); ExpectModifyIndex must equal the anchor's ModifyIndex
// (compare-and-set, as CAUpdate), else ErrConflict. Setting the value it
// has is accepted and moves the modify index.
type ExclusiveSet struct {
	Network           string `json:"network"`
	Exclusive         bool   `json:"exclusive"`
	ExpectModifyIndex uint64 `json:"expect_modify_index"`
}

func (p *ExclusiveSet) check(time.Time) *CommandError {
	return checkNetwork("network", p.Network)
}

func (p *ExclusiveSet) apply(tx *txn) *CommandError {
	if p.Network != tx.st.network {
		return fail(ErrInvalid, "exclusive membership is the own network's (%q) to set, not federated network %q's", tx.st.network, p.Network)
	}
	cur, ok := tx.st.anchors.m[p.Network]
	if !ok {
		return fail(ErrNotFound, "network %q has no trust anchor", p.Network)
	}
	if cur.ModifyIndex != p.ExpectModifyIndex {
		return fail(ErrConflict, "the trust anchor of %q is at modify index %d, not %d", p.Network, cur.ModifyIndex, p.ExpectModifyIndex)
	}
	cur.Exclusive = p.Exclusive
	put(tx, &tx.st.anchors, tAnchors, p.Network, cur)
	return nil
}

// ---- nodes and certificates ----

// nodeRevoked reports whether node id is revoked, by its record or by a
// node revocation.
func (tx *txn) nodeRevoked(id string) bool {
	if n, ok := tx.st.nodes.m[id]; ok && n.Status == NodeRevoked {
		return true
	}
	ok := tx.st.revs.set.has(revKey(RevocationNode, id))
	return ok
}

func checkIssued(field string, c *Issued) *CommandError {
	if err := checkWord(field+".issuer", c.Issuer, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkSerial(field+".serial", c.Serial, true); err != nil {
		return err
	}
	if err := checkWord(field+".node_id", c.NodeID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkTime(field+".not_after", c.NotAfter, true); err != nil {
		return err
	}
	c.NotAfter = normTime(c.NotAfter)
	return checkDER(field+".cert", c.Cert, true)
}

// canIssue checks that c may be recorded: its serial is new for its issuer
// (ErrExists) and the issuer, if known, is not revoked (ErrConflict).
func (tx *txn) canIssue(c *Issued) *CommandError {
	if _, ok := tx.st.issued.m[issuedKey(c.Issuer, c.Serial)]; ok {
		return fail(ErrExists, "issuer %q already issued serial %s", c.Issuer, c.Serial)
	}
	if is, ok := tx.st.issuers.m[c.Issuer]; ok && is.Status == IssuerRevoked {
		return fail(ErrConflict, "issuer %q is revoked", c.Issuer)
	}
	return nil
}

// NodeCertRenew records a node's renewed certificate and points the node at
// it (MsgNodeCertRenew). The node must exist (ErrNotFound) and not be revoked
// (ErrConflict); the serial must be new (ErrExists).
//
// Presented is the serial of the certificate the node authenticated with.
// Renewed with its current certificate, the node keeps that one as
// PrevSerial. Renewed with its previous one, the node never took up its
// current certificate (the answer of a renewal was lost): PrevSerial stays,
// so a node can retry a renewal whose answer it lost as often as it must.
// Any other serial is refused (ErrConflict). Without Presented (commands of
// older proposers) the current certificate becomes the previous one.
type NodeCertRenew struct {
	Cert Issued `json:"cert"`
	// Key is the public JWK of the certificate's key; a new kid rotates the
	// node to it and its previous keys start retiring.
	Key       *JWK   `json:"key,omitempty"`
	Presented string `json:"presented,omitempty"`
}

func (p *NodeCertRenew) check(now time.Time) *CommandError {
	if err := checkIssued("cert", &p.Cert); err != nil {
		return err
	}
	if err := checkSerial("presented", p.Presented, false); err != nil {
		return err
	}
	return checkNodeKey(p.Key, now, &p.Cert)
}

func (p *NodeCertRenew) apply(tx *txn) *CommandError {
	n, ok := tx.st.nodes.m[p.Cert.NodeID]
	if !ok {
		return fail(ErrNotFound, "node %q", p.Cert.NodeID)
	}
	if tx.nodeRevoked(n.ID) {
		return fail(ErrConflict, "node %q is revoked", n.ID)
	}
	if err := tx.canIssue(&p.Cert); err != nil {
		return err
	}
	if err := tx.checkKeyOwner(p.Key); err != nil {
		return err
	}
	prev := n.CertSerial
	switch p.Presented {
	case "", n.CertSerial:
	case n.PrevSerial:
		prev = n.PrevSerial
	default:
		return fail(ErrConflict, "certificate %s is neither the current nor the previous one of node %q", p.Presented, n.ID)
	}
	put(tx, &tx.st.issued, tIssued, issuedKey(p.Cert.Issuer, p.Cert.Serial), p.Cert)
	n.PrevSerial, n.CertSerial, n.CertExpiry = prev, p.Cert.Serial, p.Cert.NotAfter
	tx.putNode(n)
	tx.putNodeKey(p.Key)
	return nil
}

// ---- JWKS ----

// JWKPut adds or updates a public key (MsgJWKPut). Its owner must be an
// existing node or root server (ErrNotFound) that is not revoked or removed
// (ErrConflict); a revoked kid, or a kid owned by someone else, is refused
// (ErrConflict). Private key members are refused (ErrInvalid).
type JWKPut struct {
	Key JWK `json:"key"`
}

func (p *JWKPut) check(time.Time) *CommandError {
	k := &p.Key
	if err := checkWord("key.kid", k.KID, MaxIDLen, true); err != nil {
		return err
	}
	raw, err := checkJWK("key.key", k.Key)
	if err != nil {
		return err
	}
	k.Key = raw
	if err := checkWord("key.node", k.Node, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkOneOf("key.state", k.State, JWKStaged, JWKActive, JWKRetiring); err != nil {
		return err
	}
	if err := checkTime("key.not_after", k.NotAfter, false); err != nil {
		return err
	}
	k.NotAfter = normTime(k.NotAfter)
	return nil
}

func (p *JWKPut) apply(tx *txn) *CommandError {
	k := p.Key
	if err := tx.canPutKey(k); err != nil {
		return err
	}
	tx.putKey(k)
	return nil
}

// canPutKey checks that k may enter the JWKS: its kid is not revoked or
// owned by another, and its owner is a live node or root server.
func (tx *txn) canPutKey(k JWK) *CommandError {
	if tx.st.revs.set.has(revKey(RevocationKey, k.KID)) {
		return fail(ErrConflict, "key %q is revoked", k.KID)
	}
	if cur, ok := tx.st.jwks.m[k.KID]; ok && cur.Node != k.Node {
		return fail(ErrConflict, "key %q belongs to %q", k.KID, cur.Node)
	}
	if _, isNode := tx.st.nodes.m[k.Node]; isNode {
		if tx.nodeRevoked(k.Node) {
			return fail(ErrConflict, "node %q is revoked", k.Node)
		}
	} else if srv, isServer := tx.st.servers.m[k.Node]; isServer {
		if srv.Status == ServerRemoved {
			return fail(ErrConflict, "server %q is removed", k.Node)
		}
	} else {
		return fail(ErrNotFound, "no node or server %q", k.Node)
	}
	return nil
}

// checkNodeKey checks the key that comes with a node certificate: a
// public JWK owned by the certificate's node, active.
func checkNodeKey(k *JWK, now time.Time, cert *Issued) *CommandError {
	if k == nil {
		return nil
	}
	jp := JWKPut{Key: *k}
	if err := jp.check(now); err != nil {
		return err
	}
	*k = jp.Key
	if k.Node != cert.NodeID {
		return fail(ErrInvalid, "key.node %q is not the certificate's node %q", k.Node, cert.NodeID)
	}
	if k.State != JWKActive {
		return fail(ErrInvalid, "the key of a new certificate is active, not %s", k.State)
	}
	return nil
}

// checkKeyOwner is canPutKey for a node that the same command is about to
// make active (so it need not exist yet).
func (tx *txn) checkKeyOwner(k *JWK) *CommandError {
	if k == nil {
		return nil
	}
	if tx.st.revs.set.has(revKey(RevocationKey, k.KID)) {
		return fail(ErrConflict, "key %q is revoked", k.KID)
	}
	if cur, ok := tx.st.jwks.m[k.KID]; ok && cur.Node != k.Node {
		return fail(ErrConflict, "key %q belongs to %q", k.KID, cur.Node)
	}
	return nil
}

// putNodeKey makes k its node's signing key; the node's other active keys
// start retiring now and keep verifying what they signed until their
// NotAfter. The caller has checked k.
func (tx *txn) putNodeKey(k *JWK) {
	if k == nil {
		return
	}
	var others []string
	for kid := range tx.s.nodeKeys[k.Node] {
		if cur := tx.st.jwks.m[kid]; cur.Node == k.Node && kid != k.KID && cur.State == JWKActive {
			others = append(others, kid)
		}
	}
	slices.Sort(others)
	for _, kid := range others {
		cur := tx.st.jwks.m[kid]
		cur.State, cur.RetiringSince = JWKRetiring, tx.now
		tx.putKey(cur)
	}
	tx.putKey(*k)
}

// ---- registrations ----

// RegistrationCreate records a node's registration request
// (MsgRegistrationCreate). Its network must have a CA (ErrNotFound), its id
// must be new (ErrExists) and its node not revoked (ErrConflict) nor held
// by an active node (ErrExists).
//
// With TokenHash, it is approved at once, atomically: one use of that node
// token is consumed (the token's node-id constraint and principal must fit,
// else ErrTokenConstraint; a token without a principal grants NODE; other
// token errors as JoinTokenConsume), Cert (required, for the same node id)
// is recorded as issued (ErrExists on a repeated serial), the node is put
// active on that certificate and the registration is stored approved. Any
// failure rejects the whole command. A token allows the DNS names
// <node-id>.<network> and those it lists (ErrTokenConstraint for others).
//
// Without TokenHash, Cert must be nil and the registration is stored
// pending: one per node id (ErrConflict while another is pending: an
// operator approves or denies it first), and within Limits when given
// (ErrLimit).
//
// Either way the DNS names must lie under the network's domain and not be
// held by another active node or name a root server (ErrConflict). Status,
// Reason, Serial, Issuer and Created in the payload are ignored: Apply sets
// them.
type RegistrationCreate struct {
	Registration Registration `json:"registration"`
	TokenHash    string       `json:"token_hash,omitempty"`
	Cert         *Issued      `json:"cert,omitempty"`
	// Key, with Cert, is the node key's public JWK; it enters the JWKS as
	// the node's active key in the same command.
	Key *JWK `json:"key,omitempty"`
	// Limits bound pending registrations (those without a token); the
	// proposer sets them from its configuration.
	Limits *PendingLimits `json:"limits,omitempty"`
}

// PendingLimits bound the registrations that wait for an operator: the
// work anyone can ask of the cluster without a credential.
type PendingLimits struct {
	// Total is how many may be pending in all.
	Total int `json:"total"`
	// PerSource is how many may be pending from one client address.
	PerSource int `json:"per_source"`
}

func (p *RegistrationCreate) check(now time.Time) *CommandError {
	r := &p.Registration
	if err := checkWord("registration.id", r.ID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkNodeID("registration.node_id", r.NodeID); err != nil {
		return err
	}
	if err := checkNetwork("registration.network", r.Network); err != nil {
		return err
	}
	if err := checkPrincipal("registration.principal", r.Principal, true); err != nil {
		return err
	}
	if err := checkDER("registration.csr", r.CSR, true); err != nil {
		return err
	}
	r.DNSNames = nilIfEmpty(r.DNSNames)
	if err := checkDNSNames("registration.dns_names", r.DNSNames); err != nil {
		return err
	}
	if err := checkWord("registration.source", r.Source, MaxIDLen, false); err != nil {
		return err
	}
	if l := p.Limits; l != nil && (l.Total < 1 || l.PerSource < 1) {
		return fail(ErrInvalid, "limits must be at least 1 (total %d, per source %d)", l.Total, l.PerSource)
	}
	r.Status, r.Reason, r.Serial, r.Issuer, r.Created = RegistrationPending, "", "", "", now
	if p.TokenHash == "" {
		if p.Cert != nil || p.Key != nil {
			return fail(ErrInvalid, "cert or key without token_hash: approve the registration instead")
		}
		return nil
	}
	if err := checkHash("token_hash", p.TokenHash); err != nil {
		return err
	}
	if p.Cert == nil {
		return fail(ErrInvalid, "token_hash without cert")
	}
	if err := checkIssued("cert", p.Cert); err != nil {
		return err
	}
	if p.Cert.NodeID != r.NodeID {
		return fail(ErrInvalid, "cert.node_id %q is not registration.node_id %q", p.Cert.NodeID, r.NodeID)
	}
	return checkNodeKey(p.Key, now, p.Cert)
}

func (p *RegistrationCreate) apply(tx *txn) *CommandError {
	r := p.Registration
	if _, ok := tx.st.regs.m[r.ID]; ok {
		return fail(ErrExists, "registration %q", r.ID)
	}
	if _, ok := tx.st.cas.m[r.Network]; !ok {
		return fail(ErrNotFound, "network %q has no CA here", r.Network)
	}
	if tx.nodeRevoked(r.NodeID) {
		return fail(ErrConflict, "node %q is revoked", r.NodeID)
	}
	if err := tx.nodeFree(r.NodeID); err != nil {
		return err
	}
	if err := tx.checkDNSHolders(r.NodeID, r.DNSNames); err != nil {
		return err
	}
	if p.TokenHash == "" {
		if id, ok := tx.s.pending.byNode[r.NodeID]; ok {
			return fail(ErrConflict, "registration %s of node %q is already pending; approve or deny it first", id, r.NodeID)
		}
		if l := p.Limits; l != nil {
			if tx.s.pending.total >= l.Total {
				return fail(ErrLimit, "%d registrations are pending, the limit", tx.s.pending.total)
			}
			if r.Source != "" && tx.s.pending.bySource[r.Source] >= l.PerSource {
				return fail(ErrLimit, "%d registrations from %s are pending, the limit per source", tx.s.pending.bySource[r.Source], r.Source)
			}
		}
		tx.putReg(r)
		return nil
	}
	tok, err := tx.useToken(p.TokenHash, TokenKindNode, r.NodeID)
	if err != nil {
		return err
	}
	granted := tok.Principal
	if granted == "" {
		granted = PrincipalNode
	}
	if granted != r.Principal {
		return fail(ErrTokenConstraint, "token %s is for principal %s, not %s", tok.ID, granted, r.Principal)
	}
	for _, d := range r.DNSNames {
		if d != r.NodeID+"."+r.Network && !slices.Contains(tok.DNSNames, d) {
			return fail(ErrTokenConstraint, "token %s allows the DNS name %s.%s and %v, not %s", tok.ID, r.NodeID, r.Network, tok.DNSNames, d)
		}
	}
	if err := tx.canIssue(p.Cert); err != nil {
		return err
	}
	if err := tx.checkKeyOwner(p.Key); err != nil {
		return err
	}
	put(tx, &tx.st.tokens, tTokens, tok.Hash, tok)
	tx.approve(r, *p.Cert, "")
	tx.putNodeKey(p.Key)
	return nil
}

// nodeFree refuses a registration for a node id that is already active:
// two registrations racing for one id get one certificate between them. A
// node is active no more once it cannot renew: its certificate has
// expired, or it, the issuer that signed it, or its key is revoked; it may
// then register again under its id.
func (tx *txn) nodeFree(id string) *CommandError {
	if n, ok := tx.st.nodes.m[id]; ok && n.ActiveAt(tx.now) && tx.certUsable(n) {
		return fail(ErrExists, "node %q is already active", id)
	}
	return nil
}

// certUsable reports whether node n's current certificate can still
// authenticate: not revoked by serial, its issuer not revoked, and the
// node's active key not revoked.
func (tx *txn) certUsable(n Node) bool {
	if n.CertSerial == "" {
		return true
	}
	if tx.st.revs.set.has(revKey(RevocationCert, n.CertSerial)) {
		return false
	}
	for _, is := range tx.st.issuers.m {
		if _, ok := tx.st.issued.m[issuedKey(is.ID, n.CertSerial)]; ok && is.Status == IssuerRevoked {
			return false
		}
	}
	for kid := range tx.s.nodeKeys[n.ID] {
		if k := tx.st.jwks.m[kid]; k.Node == n.ID && k.State == JWKActive {
			if tx.st.revs.set.has(revKey(RevocationKey, kid)) {
				return false
			}
		}
	}
	return true
}

// checkDNSHolders refuses DNS names for node id that lie outside the
// network's domain, that another active node holds, or that name a root
// server (the host of its Raft or API address).
func (tx *txn) checkDNSHolders(id string, names []string) *CommandError {
	for _, d := range names {
		if strings.HasPrefix(d, "*.") {
			return fail(ErrConflict, "DNS name %s is a wildcard; nodes hold names of their own only", d)
		}
		if tx.st.network != "" && !strings.HasSuffix(d, "."+tx.st.network) {
			return fail(ErrConflict, "DNS name %s is not under the network's domain %s", d, tx.st.network)
		}
		if owner, ok := tx.s.dnsOwners[d]; ok && owner != id {
			if n := tx.st.nodes.m[owner]; n.ActiveAt(tx.now) && n.Status != NodeRevoked {
				return fail(ErrConflict, "DNS name %s is held by node %q", d, owner)
			}
		}
		for _, srv := range tx.st.servers.m {
			for _, addr := range []string{srv.APIAddr, srv.RaftAddr} {
				if host, _, err := net.SplitHostPort(addr); err == nil && strings.EqualFold(host, d) {
					return fail(ErrConflict, "DNS name %s names root server %q", d, srv.Name)
				}
			}
		}
	}
	return nil
}

// approve records cert, puts the node on it (with principal, or the
// registration's when ""), and stores r approved. The caller has checked
// everything.
func (tx *txn) approve(r Registration, cert Issued, principal string) {
	if principal == "" {
		principal = r.Principal
	}
	put(tx, &tx.st.issued, tIssued, issuedKey(cert.Issuer, cert.Serial), cert)
	n := Node{ID: r.NodeID, Network: r.Network, Principal: principal, Status: NodeActive,
		CertSerial: cert.Serial, CertExpiry: cert.NotAfter, DNSNames: r.DNSNames}
	if old, ok := tx.st.nodes.m[r.NodeID]; ok && old.CertSerial != cert.Serial {
		n.PrevSerial = old.CertSerial
	}
	tx.putNode(n)
	r.Status, r.Serial, r.Issuer, r.Principal = RegistrationApproved, cert.Serial, cert.Issuer, principal
	tx.putReg(r)
}

// RegistrationApprove approves a pending registration with its certificate
// (MsgRegistrationApprove): records Cert as issued, puts the node and marks
// the registration approved. ErrNotFound; ErrConflict if it is not pending,
// its node is revoked or a DNS name of it is taken; ErrInvalid if Cert is
// for another node; ErrExists on a repeated serial.
type RegistrationApprove struct {
	ID   string `json:"id"`
	Cert Issued `json:"cert"`
	Key  *JWK   `json:"key,omitempty"` // as in RegistrationCreate
	// Principal, when set, is the principal the node gets instead of the
	// one the registration asked for (the approver's decision).
	Principal string `json:"principal,omitempty"`
}

func (p *RegistrationApprove) check(now time.Time) *CommandError {
	if err := checkWord("id", p.ID, MaxIDLen, true); err != nil {
		return err
	}
	if err := checkPrincipal("principal", p.Principal, false); err != nil {
		return err
	}
	if err := checkIssued("cert", &p.Cert); err != nil {
		return err
	}
	return checkNodeKey(p.Key, now, &p.Cert)
}

func (p *RegistrationApprove) apply(tx *txn) *CommandError {
	r, ok := tx.st.regs.m[p.ID]
	if !ok {
		return fail(ErrNotFound, "registration %q", p.ID)
	}
	if r.Status != RegistrationPending {
		return fail(ErrConflict, "registration %q is %s", p.ID, r.Status)
	}
	if p.Cert.NodeID != r.NodeID {
		return fail(ErrInvalid, "cert.node_id %q is not the registration's node %q", p.Cert.NodeID, r.NodeID)
	}
	if tx.nodeRevoked(r.NodeID) {
		return fail(ErrConflict, "node %q is revoked", r.NodeID)
	}
	if err := tx.nodeFree(r.NodeID); err != nil {
		return err
	}
	if err := tx.checkDNSHolders(r.NodeID, r.DNSNames); err != nil {
		return err
	}
	if err := tx.canIssue(&p.Cert); err != nil {
		return err
	}
	if err := tx.checkKeyOwner(p.Key); err != nil {
		return err
	}
	tx.approve(r, p.Cert, p.Principal)
	tx.putNodeKey(p.Key)
	return nil
}

// RegistrationDeny denies a pending registration (MsgRegistrationDeny);
// ErrNotFound, or ErrConflict if it is not pending.
type RegistrationDeny struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

func (p *RegistrationDeny) check(time.Time) *CommandError {
	if err := checkWord("id", p.ID, MaxIDLen, true); err != nil {
		return err
	}
	return checkText("reason", p.Reason, MaxTextLen, false)
}

func (p *RegistrationDeny) apply(tx *txn) *CommandError {
	r, ok := tx.st.regs.m[p.ID]
	if !ok {
		return fail(ErrNotFound, "registration %q", p.ID)
	}
	if r.Status != RegistrationPending {
		return fail(ErrConflict, "registration %q is %s", p.ID, r.Status)
	}
	r.Status, r.Reason = RegistrationDenied, p.Reason
	tx.putReg(r)
	return nil
}

// ---- policy and routes ----

// PolicySet replaces the policy text (MsgPolicySet) if its version is still
// ExpectVersion (ErrConflict otherwise); the version then goes up by one.
type PolicySet struct {
	Text          string `json:"text"`
	ExpectVersion uint64 `json:"expect_version"`
}

func (p *PolicySet) check(time.Time) *CommandError {
	return checkText("text", p.Text, MaxPolicyLen, true)
}

func (p *PolicySet) apply(tx *txn) *CommandError {
	cur := tx.st.policy
	if cur.Version != p.ExpectVersion {
		return fail(ErrConflict, "policy is at version %d, not %d", cur.Version, p.ExpectVersion)
	}
	np := Policy{Text: p.Text, Version: cur.Version + 1, Indexes: Indexes{CreateIndex: cur.CreateIndex, ModifyIndex: tx.index}}
	if np.CreateIndex == 0 {
		np.CreateIndex = tx.index
	}
	tx.st.policy = np
	tx.touched(tPolicy, policyKey, false)
	return nil
}

func checkPrefix(field, s string) (netip.Prefix, *CommandError) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return pfx, fail(ErrInvalid, "%s: %v", field, err)
	}
	if pfx.Masked().String() != s {
		return pfx, fail(ErrInvalid, "%s %q is not canonical (want %q)", field, s, pfx.Masked().String())
	}
	return pfx, nil
}

// RouteAuthPut says who may originate a prefix (MsgRouteAuthPut). Prefix
// must be canonical CIDR; MaxLength between the prefix length and the
// address size; 1..MaxListLen distinct origins; ASN 0 (none) or one
// CheckASN takes. With ExpectModifyIndex the
// record must be at that modify index (0: there is none), else
// ErrConflict: a read-modify-write of the origins loses nothing.
type RouteAuthPut struct {
	Auth              RouteAuth `json:"auth"`
	ExpectModifyIndex *uint64   `json:"expect_modify_index,omitempty"`
}

// checkExpect is the compare-and-set of a record's modify index (0: it
// must not exist).
func checkExpect(what string, expect *uint64, cur uint64, exists bool) *CommandError {
	if expect == nil {
		return nil
	}
	if !exists {
		cur = 0
	}
	if cur != *expect {
		return fail(ErrConflict, "%s is at modify index %d, not %d", what, cur, *expect)
	}
	return nil
}

func (p *RouteAuthPut) check(time.Time) *CommandError {
	a := &p.Auth
	pfx, err := checkPrefix("auth.prefix", a.Prefix)
	if err != nil {
		return err
	}
	if a.MaxLength < pfx.Bits() || a.MaxLength > pfx.Addr().BitLen() {
		return fail(ErrInvalid, "auth.max_length %d is outside %d..%d", a.MaxLength, pfx.Bits(), pfx.Addr().BitLen())
	}
	if len(a.Origins) == 0 {
		return fail(ErrInvalid, "auth.origins is required")
	}
	if err := checkOptionalASN("auth.asn", a.ASN); err != nil {
		return err
	}
	return checkUniqueWords("auth.origins", a.Origins, MaxListLen, MaxIDLen, false)
}

func (p *RouteAuthPut) apply(tx *txn) *CommandError {
	cur, ok := tx.st.routes.m[p.Auth.Prefix]
	if err := checkExpect("route authorization "+p.Auth.Prefix, p.ExpectModifyIndex, cur.ModifyIndex, ok); err != nil {
		return err
	}
	put(tx, &tx.st.routes, tRoutes, p.Auth.Prefix, p.Auth)
	return nil
}

// RouteAuthDelete removes a route authorization (MsgRouteAuthDelete);
// ErrNotFound if there is none. ExpectModifyIndex as in RouteAuthPut.
type RouteAuthDelete struct {
	Prefix            string  `json:"prefix"`
	ExpectModifyIndex *uint64 `json:"expect_modify_index,omitempty"`
}

func (p *RouteAuthDelete) check(time.Time) *CommandError {
	_, err := checkPrefix("prefix", p.Prefix)
	return err
}

func (p *RouteAuthDelete) apply(tx *txn) *CommandError {
	cur, ok := tx.st.routes.m[p.Prefix]
	if !ok {
		return fail(ErrNotFound, "route authorization %q", p.Prefix)
	}
	if err := checkExpect("route authorization "+p.Prefix, p.ExpectModifyIndex, cur.ModifyIndex, ok); err != nil {
		return err
	}
	del(tx, &tx.st.routes, tRoutes, p.Prefix)
	return nil
}
