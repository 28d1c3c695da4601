package fsm

import ()

// Reader reads one state consistently: every call sees the state as it was
// when Store.Read began, so a reader that asks what changed and then reads
// the changed records gets both at one index. A Reader is valid only
// inside the function given to Read; like the Store's queries it returns
// copies.
type Reader struct{ s *Store }

// Read calls f with a Reader of the current state. Apply waits until f
// returns, so f must be quick and must not call the Store.
func (s *Store) Read(f func(Reader)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f(Reader{s: s})
}

// Index is the index of the state read.
func (r Reader) Index() uint64 { return r.s.index.Load() }

// Network is the network of the Genesis.
func (r Reader) Network() string { return r.s.st.network }

// TableIndex is Store.TableIndex at the state read.
func (r Reader) TableIndex(t Table) uint64 {
	if id, ok := tableIDOf(t); ok {
		return r.s.tableIndex[id]
	}
	return 0
}

// Changes is Store.Changes at the state read.
func (r Reader) Changes(since uint64) Changes { return r.s.changesLocked(since) }

// JWK returns the public key with kid.
func (r Reader) JWK(kid string) (JWK, bool) { return get(r.s.st.jwks.m, kid, cloneJWK) }

// JWKS returns all public keys, sorted by kid.
func (r Reader) JWKS() []JWK { return sortedValues(r.s.st.jwks.m, cloneJWK) }

// Issued returns the certificate issuer signed with serial.
func (r Reader) Issued(issuer, serial string) (Issued, bool) {
	return get(r.s.st.issued.m, issuedKey(issuer, serial), cloneIssued)
}

// Node returns the node record with id.
func (r Reader) Node(id string) (Node, bool) { return get(r.s.st.nodes.m, id, cloneNode) }

// Nodes returns all node records.
func (r Reader) Nodes() []Node { return sortedValues(r.s.st.nodes.m, cloneNode) }

// Server returns the root server record called name.
func (r Reader) Server(name string) (Server, bool) {
	return get(r.s.st.servers.m, name, sameValue[Server])
}

// Servers returns all root server records.
func (r Reader) Servers() []Server { return sortedValues(r.s.st.servers.m, sameValue[Server]) }

// TrustAnchor returns the trust anchor of network.
func (r Reader) TrustAnchor(network string) (TrustAnchor, bool) {
	return get(r.s.st.anchors.m, network, cloneAnchor)
}

// TrustAnchors returns all trust anchors.
func (r Reader) TrustAnchors() []TrustAnchor { return sortedValues(r.s.st.anchors.m, cloneAnchor) }

// RouteAuth returns the route authorization of prefix.
func (r Reader) RouteAuth(prefix string) (RouteAuth, bool) {
	return get(r.s.st.routes.m, prefix, cloneRouteAuth)
}

// RouteAuths returns all route authorizations, sorted by prefix text.
func (r Reader) RouteAuths() []RouteAuth { return sortedValues(r.s.st.routes.m, cloneRouteAuth) }

// Policy returns the policy set.
func (r Reader) Policy() Policy { return r.s.st.policy }

// Revocation returns the revocation stored under a key as Changes reports
// it ("kind:id").
func (r Reader) Revocation(key string) (Revocation, bool) {
	kind, id, ok := cutRevocationKey(key)
	if !ok {
		return Revocation{}, false
	}
	k := revKey(kind, id)
	rec, ok := r.s.st.revs.set.get(k)
	if !ok {
		return Revocation{}, false
	}
	return rec.export(k), true
}

// Revoked returns the revocation of kind and id, if there is one.
func (r Reader) Revoked(kind RevocationKind, id string) (Revocation, bool) {
	k := revKey(kind, id)
	if k == "" {
		return Revocation{}, false
	}
	rec, ok := r.s.st.revs.set.get(k)
	if !ok {
		return Revocation{}, false
	}
	return rec.export(k), true
}

// RevocationsOf returns the revocations of the given kinds, sorted by kind
// and id; it reads no record of another kind.
func (r Reader) RevocationsOf(kinds ...RevocationKind) []Revocation {
	var letters []byte
	for _, k := range kinds {
		if b := revKindByte(k); b != 0 {
			letters = append(letters, b)
		}
	}
	if letters == nil {
		return nil
	}
	return r.s.st.revs.set.exportKinds(letters)
}

// Revocations returns all revocations, sorted by kind and id.
func (r Reader) Revocations() []Revocation {
	return r.s.st.revs.set.export()
}

func get[V any](m map[string]V, key string, clone func(V) V) (V, bool) {
	v, ok := m[key]
	if !ok {
		return v, false
	}
	return clone(v), true
}

// cutRevocationKey splits "kind:id".
func cutRevocationKey(key string) (RevocationKind, string, bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == ':' {
			k := RevocationKind(key[:i])
			if revKindByte(k) == 0 || i == len(key)-1 {
				return "", "", false
			}
			return k, key[i+1:], true
		}
	}
	return "", "", false
}
