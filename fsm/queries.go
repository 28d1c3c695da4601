package fsm

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Queries return copies: changing a result never changes the store. Lists
// are sorted by key.

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return slices.Clone(b)
}

func cloneList(l [][]byte) [][]byte {
	if l == nil {
		return nil
	}
	out := make([][]byte, len(l))
	for i, b := range l {
		out[i] = cloneBytes(b)
	}
	return out
}

func sameValue[V any](v V) V { return v }

func cloneCA(c CA) CA {
	c.Active, c.SealedKey = cloneBytes(c.Active), cloneBytes(c.SealedKey)
	c.Prepared, c.Retired, c.CrossSigns = cloneList(c.Prepared), cloneList(c.Retired), cloneList(c.CrossSigns)
	c.GossipKeys = slices.Clone(c.GossipKeys)
	for i := range c.GossipKeys {
		c.GossipKeys[i].Sealed = cloneBytes(c.GossipKeys[i].Sealed)
	}
	return c
}

func cloneIssuer(i Issuer) Issuer { i.Cert = cloneBytes(i.Cert); return i }

func cloneAnchor(a TrustAnchor) TrustAnchor {
	a.Roots, a.Accept, a.Endpoints = cloneList(a.Roots), slices.Clone(a.Accept), slices.Clone(a.Endpoints)
	a.Keys = slices.Clone(a.Keys)
	for i := range a.Keys {
		a.Keys[i].Key = cloneBytes(a.Keys[i].Key)
	}
	return a
}

func cloneIssued(c Issued) Issued { c.Cert = cloneBytes(c.Cert); return c }

func cloneJWK(k JWK) JWK { k.Key = cloneBytes(k.Key); return k }

// PendingRegistration returns the pending registration of node id, if
// there is one (at most one per node id).
func (s *Store) PendingRegistration(nodeID string) (Registration, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.pending.byNode[nodeID]
	if !ok {
		return Registration{}, false
	}
	return cloneRegistration(s.st.regs.m[id]), true
}

// DNSNameHolder returns the node whose record holds the DNS name, if any
// (whatever its status; see Node.ActiveAt).
func (s *Store) DNSNameHolder(name string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.dnsOwners[name]
	return id, ok
}

func cloneRegistration(r Registration) Registration {
	r.CSR, r.DNSNames = cloneBytes(r.CSR), slices.Clone(r.DNSNames)
	return r
}

func cloneNode(n Node) Node { n.DNSNames = slices.Clone(n.DNSNames); return n }

func cloneToken(t JoinToken) JoinToken { t.DNSNames = slices.Clone(t.DNSNames); return t }

func cloneRouteAuth(a RouteAuth) RouteAuth { a.Origins = slices.Clone(a.Origins); return a }

func sortedValues[V any](m map[string]V, clone func(V) V) []V {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = clone(m[k])
	}
	return out
}

func lookup[V any](s *Store, t func(*state) *table[V], key string, clone func(V) V) (V, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := t(s.st).m[key]
	if !ok {
		return v, false
	}
	return clone(v), true
}

func list[V any](s *Store, t func(*state) *table[V], clone func(V) V) []V {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(t(s.st).m, clone)
}

func servers(st *state) *table[Server]       { return &st.servers }
func cas(st *state) *table[CA]               { return &st.cas }
func issuers(st *state) *table[Issuer]       { return &st.issuers }
func tokens(st *state) *table[JoinToken]     { return &st.tokens }
func anchors(st *state) *table[TrustAnchor]  { return &st.anchors }
func nodes(st *state) *table[Node]           { return &st.nodes }
func issued(st *state) *table[Issued]        { return &st.issued }
func jwks(st *state) *table[JWK]             { return &st.jwks }
func regs(st *state) *table[Registration]    { return &st.regs }
func routeAuths(st *state) *table[RouteAuth] { return &st.routes }

// Servers returns all root server records.
func (s *Store) Servers() []Server { return list(s, servers, sameValue[Server]) }

// Server returns the root server record called name.
func (s *Store) Server(name string) (Server, bool) {
	return lookup(s, servers, name, sameValue[Server])
}

// CA returns the CA record of network.
func (s *Store) CA(network string) (CA, bool) { return lookup(s, cas, network, cloneCA) }

// CAs returns all CA records.
func (s *Store) CAs() []CA { return list(s, cas, cloneCA) }

// Network returns the network of the Genesis, "" before it.
func (s *Store) Network() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.network
}

// Issuers returns all issuer records.
func (s *Store) Issuers() []Issuer { return list(s, issuers, cloneIssuer) }

// Issuer returns the issuer record of root server id.
func (s *Store) Issuer(id string) (Issuer, bool) { return lookup(s, issuers, id, cloneIssuer) }

// JoinTokens returns all join tokens, sorted by hash.
func (s *Store) JoinTokens() []JoinToken { return list(s, tokens, cloneToken) }

// JoinToken returns the join token whose secret has the hex SHA-256 hash.
func (s *Store) JoinToken(hash string) (JoinToken, bool) {
	return lookup(s, tokens, hash, cloneToken)
}

// JoinTokenByID returns the join token with public id.
func (s *Store) JoinTokenByID(id string) (JoinToken, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.tokenIDs[id]
	if !ok {
		return JoinToken{}, false
	}
	t, ok := s.st.tokens.m[h]
	return cloneToken(t), ok
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (r revRec) export(key string) Revocation {
	k, _ := revKindOf(key[0])
	return Revocation{
		Kind: k, ID: key[1:], Reason: r.reason,
		Time: fromNanos(r.time), PruneAfter: fromNanos(r.pruneAfter),
		Indexes: Indexes{CreateIndex: r.index, ModifyIndex: r.index},
	}
}

// Revocations returns all revocations, sorted by kind and id.
func (s *Store) Revocations() []Revocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.revs.set.export()
}

// Revoked returns the revocation of kind and id, if there is one. It does
// not allocate.
func (s *Store) Revoked(kind RevocationKind, id string) (Revocation, bool) {
	kb := revKindByte(kind)
	if kb == 0 {
		return Revocation{}, false
	}
	s.mu.RLock()
	r, ok := s.st.revs.set.getID(kb, id)
	s.mu.RUnlock()
	if !ok {
		return Revocation{}, false
	}
	return Revocation{
		Kind: kind, ID: id, Reason: r.reason,
		Time: fromNanos(r.time), PruneAfter: fromNanos(r.pruneAfter),
		Indexes: Indexes{CreateIndex: r.index, ModifyIndex: r.index},
	}, true
}

// RevocationCount returns the number of revocations held.
func (s *Store) RevocationCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.revs.set.len()
}

// TrustAnchors returns all trust anchors.
func (s *Store) TrustAnchors() []TrustAnchor { return list(s, anchors, cloneAnchor) }

// FederatedKey finds kid among the keys of the federated networks'
// anchors (each list is sorted by kid): the network and the key.
func (s *Store) FederatedKey(kid string) (string, FederatedKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, a := range s.st.anchors.m {
		if k, ok := FindFederatedKey(a.Keys, kid); ok {
			k.Key = cloneBytes(k.Key)
			return a.Network, k, true
		}
	}
	return "", FederatedKey{}, false
}

// FindFederatedKey finds kid in keys sorted by kid.
func FindFederatedKey(keys []FederatedKey, kid string) (FederatedKey, bool) {
	i, ok := slices.BinarySearchFunc(keys, kid, func(k FederatedKey, kid string) int { return strings.Compare(k.KID, kid) })
	if !ok {
		return FederatedKey{}, false
	}
	return keys[i], true
}

// TrustAnchor returns the trust anchor of network.
func (s *Store) TrustAnchor(network string) (TrustAnchor, bool) {
	return lookup(s, anchors, network, cloneAnchor)
}

// Nodes returns all node records.
func (s *Store) Nodes() []Node { return list(s, nodes, cloneNode) }

// Node returns the node record with id.
func (s *Store) Node(id string) (Node, bool) { return lookup(s, nodes, id, cloneNode) }

// Issued returns the record of the certificate issuer signed with serial
// (FormatSerial spelling).
func (s *Store) Issued(issuer, serial string) (Issued, bool) {
	return lookup(s, issued, issuedKey(issuer, serial), cloneIssued)
}

// IssuedList returns all issued certificates, sorted by "issuer/serial".
func (s *Store) IssuedList() []Issued { return list(s, issued, cloneIssued) }

// JWKS returns all public keys.
func (s *Store) JWKS() []JWK { return list(s, jwks, cloneJWK) }

// JWK returns the public key with kid.
func (s *Store) JWK(kid string) (JWK, bool) { return lookup(s, jwks, kid, cloneJWK) }

// Registrations returns all registrations.
func (s *Store) Registrations() []Registration { return list(s, regs, cloneRegistration) }

// Registration returns the registration with id.
func (s *Store) Registration(id string) (Registration, bool) {
	return lookup(s, regs, id, cloneRegistration)
}

// Policy returns the policy set (zero before the first PolicySet).
func (s *Store) Policy() Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.policy
}

// RouteAuths returns all route authorizations, sorted by prefix text.
func (s *Store) RouteAuths() []RouteAuth { return list(s, routeAuths, cloneRouteAuth) }

// RouteAuth returns the route authorization of prefix (canonical CIDR).
func (s *Store) RouteAuth(prefix string) (RouteAuth, bool) {
	return lookup(s, routeAuths, prefix, cloneRouteAuth)
}

// Sizes are the record counts of the state's tables.
type Sizes struct {
	Servers, Issuers, JoinTokens, Revocations, TrustAnchors int
	Nodes, Issued, JWKS, Registrations, RouteAuths          int
}

// Sizes counts the records of every table (for metrics; no copies).
func (s *Store) Sizes() Sizes {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.st
	return Sizes{Servers: len(st.servers.m), Issuers: len(st.issuers.m), JoinTokens: len(st.tokens.m),
		Revocations: st.revs.set.len(), TrustAnchors: len(st.anchors.m), Nodes: len(st.nodes.m), Issued: len(st.issued.m),
		JWKS: len(st.jwks.m), Registrations: len(st.regs.m), RouteAuths: len(st.routes.m)}
}
