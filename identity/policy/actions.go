package policy

// Action is an operation of the root servers' and node agents' APIs that
// Cedar decides on. In policies it is Action::"<name>".
type Action string

// The actions, one for every API operation. The HTTP routes are those of
// DESIGN.md; the root server maps each route to its action.
const (
	// ClusterRead: GET /v1/cluster/status, GET /v1/cluster/peers, GET /v1/sys/metrics.
	ClusterRead Action = "cluster.read"
	// ClusterJoin: a root server joins the cluster (root join).
	ClusterJoin Action = "cluster.join"
	// ClusterRemove: remove a root server from the cluster.
	ClusterRemove Action = "cluster.remove"
	// NodeList: list node records and their certificates.
	NodeList Action = "node.list"
	// TokenCreate: POST /v1/join-tokens.
	TokenCreate Action = "token.create"
	// TokenList: GET /v1/join-tokens.
	TokenList Action = "token.list"
	// TokenRevoke: DELETE /v1/join-tokens/{id}.
	TokenRevoke Action = "token.revoke"
	// RegistrationList: GET /v1/registrations[/{id}].
	RegistrationList Action = "registration.list"
	// RegistrationApprove: POST /v1/registrations/{id}/approve.
	RegistrationApprove Action = "registration.approve"
	// RegistrationDeny: POST /v1/registrations/{id}/deny.
	RegistrationDeny Action = "registration.deny"
	// RevocationCreate: POST /v1/revocations (revoke a cert, token, key or node).
	RevocationCreate Action = "revocation.create"
	// RevocationList: GET /v1/revocations.
	RevocationList Action = "revocation.list"
	// PolicyRead: GET /v1/policies.
	PolicyRead Action = "policy.read"
	// PolicyWrite: PUT /v1/policies. Whoever may write policies may grant
	// itself anything: by default only ADMIN.
	PolicyWrite Action = "policy.write"
	// CertRenew: POST /v1/certs/renew (also a key rotation: new key, new certificate).
	CertRenew Action = "cert.renew"
	// CARotate: the AS root rollover steps (prepare, stage, activate, retire).
	CARotate Action = "ca.rotate"
	// TrustRead: GET /v1/trust, /v1/ca/bundle, /v1/ca/crl, /.well-known/jwks.json.
	TrustRead Action = "trust.read"
	// TrustWrite: change federated networks' anchors, the access list and
	// the network's exclusive membership (the own anchor's).
	TrustWrite Action = "trust.write"
	// RouteAuthRead: read route (origin) authorizations.
	RouteAuthRead Action = "routeauth.read"
	// RouteAuthWrite: create, change or delete route (origin) authorizations.
	RouteAuthWrite Action = "routeauth.write"
	// PeerConnect: open a peering session (decided on the OPEN message).
	PeerConnect Action = "peer.connect"
	// RouteAnnounce: announce routes in a peering session (UPDATE).
	RouteAnnounce Action = "route.announce"
	// AuthorizeQuery: POST /v1/authorize (which actions may this token take).
	AuthorizeQuery Action = "authorize.query"
	// GossipKeys: GET /v1/gossip/keys, the gossip keyring (a node, by its
	// certificate).
	GossipKeys Action = "gossip.keys"
	// MetricsRead: GET /metrics.
	MetricsRead Action = "metrics.read"
)

// Actions lists every action, in the order above.
func Actions() []Action {
	return []Action{
		ClusterRead, ClusterJoin, ClusterRemove, NodeList,
		TokenCreate, TokenList, TokenRevoke,
		RegistrationList, RegistrationApprove, RegistrationDeny,
		RevocationCreate, RevocationList,
		PolicyRead, PolicyWrite,
		CertRenew, CARotate, TrustRead, TrustWrite,
		RouteAuthRead, RouteAuthWrite,
		PeerConnect, RouteAnnounce, AuthorizeQuery, GossipKeys, MetricsRead,
	}
}

// Known reports whether a is one of Actions.
func (a Action) Known() bool {
	for _, k := range Actions() {
		if a == k {
			return true
		}
	}
	return false
}
