package api

import (
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

// Audience is the audience of tokens presented to the root servers' API
// of network.
func Audience(network string) string { return "spiffe://" + network + "/api" }

// Health is the answer of GET /v1/sys/health.
type Health struct {
	Status       string `json:"status"` // "ok" when a leader is known, "no_leader" otherwise
	Name         string `json:"name"`
	Network      string `json:"network"`
	Leader       string `json:"leader,omitempty"`
	AppliedIndex uint64 `json:"applied_index"`
}

// ServerInfo describes one root server in status answers.
type ServerInfo struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage"` // "voter", "nonvoter" or "none" (known to the state but not to Raft)
	Status   string `json:"status"`   // the replicated record's status
}

// Status is the answer of GET /v1/cluster/status: the view of the server
// that answers.
type Status struct {
	Name         string       `json:"name"`
	Network      string       `json:"network"`
	State        string       `json:"state"`
	Leader       string       `json:"leader,omitempty"`
	Term         uint64       `json:"term"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LastLogIndex uint64       `json:"last_log_index"`
	StateHash    string       `json:"state_hash"`
	Servers      []ServerInfo `json:"servers"`
}

// CreateJoinTokenRequest is the body of POST /v1/join-tokens.
type CreateJoinTokenRequest struct {
	Kind        string `json:"kind"`                // "root" or "node"
	Principal   string `json:"principal,omitempty"` // for node tokens: the principal the node gets
	NodeID      string `json:"node_id,omitempty"`   // optional constraint: only this node id may use it
	Uses        int    `json:"uses,omitempty"`      // default 1
	TTL         string `json:"ttl,omitempty"`       // Go duration, default 24h, at most 720h
	Description string `json:"description,omitempty"`
	// DNSNames are DNS names under the network's domain that a node
	// joining with the token may hold besides <node-id>.<network>.
	DNSNames []string `json:"dns_names,omitempty"`
}

// JoinTokenInfo is a join token as listed: everything but the secret.
type JoinTokenInfo struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`
	Principal   string    `json:"principal,omitempty"`
	NodeID      string    `json:"node_id,omitempty"`
	Uses        int       `json:"uses"`
	Used        int       `json:"used"`
	Expiry      time.Time `json:"expiry"`
	Revoked     bool      `json:"revoked"`
	Description string    `json:"description,omitempty"`
	DNSNames    []string  `json:"dns_names,omitempty"`
}

// CreatedJoinToken is the answer of POST /v1/join-tokens; the secret is
// shown this once.
type CreatedJoinToken struct {
	JoinTokenInfo
	Secret string `json:"secret"`
	Index  uint64 `json:"index"`
}

// RevokeRequest is the body of POST /v1/revocations.
type RevokeRequest struct {
	Kind   string `json:"kind"` // cert, token, key or node
	ID     string `json:"id"`   // certificate serial (hex), token jti, key id, or node id
	Reason string `json:"reason,omitempty"`
	// PruneAfter is when the revoked thing would have expired anyway; the
	// revocation is dropped after it. Default: the certificate's or key's
	// end of life when the state knows it, else 30 days from now; never for
	// nodes.
	PruneAfter *time.Time `json:"prune_after,omitempty"`
}

// RevokeResponse is the answer of POST /v1/revocations.
type RevokeResponse struct {
	Revocation fsm.Revocation `json:"revocation"`
	Index      uint64         `json:"index"`
}

// RegisterRequest is the body of POST /v1/registrations: a node asks for a
// certificate. Identity comes from these fields (checked, and approved by
// a token or an operator), never from the CSR's subject or SANs.
type RegisterRequest struct {
	CSR       []byte   `json:"csr"` // DER PKCS#10, P-256, P-384 or Ed25519
	NodeID    string   `json:"node_id"`
	Network   string   `json:"network,omitempty"`   // must be this server's network when given
	Token     string   `json:"token,omitempty"`     // node join token: approval at once
	Principal string   `json:"principal,omitempty"` // default: the token's, else NODE
	DNSNames  []string `json:"dns_names,omitempty"`
}

// RegistrationInfo is a registration as the API shows it (without the CSR).
type RegistrationInfo struct {
	ID        string    `json:"id"`
	NodeID    string    `json:"node_id"`
	Network   string    `json:"network"`
	Principal string    `json:"principal"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Status    string    `json:"status"` // pending, approved, denied
	Reason    string    `json:"reason,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	Created   time.Time `json:"created"`
}

// RegistrationResponse answers a registration, a collection or an approval.
// Chain (DER, leaf first, then the issuing intermediate) is present once the
// registration is approved and its issuance committed.
type RegistrationResponse struct {
	Registration RegistrationInfo `json:"registration"`
	Chain        [][]byte         `json:"chain,omitempty"`
	Index        uint64           `json:"index,omitempty"`
}

// CollectRequest proves possession of the registration's key: Signature is
// ca.SignPossession(key, "collect", id, Time) with Time in RFC 3339.
type CollectRequest struct {
	Time      string `json:"time"`
	Signature []byte `json:"signature"`
}

// DenyRequest is the body of POST /v1/registrations/{id}/deny.
type DenyRequest struct {
	Reason string `json:"reason"`
}

// ApproveRequest is the body of POST /v1/registrations/{id}/approve.
type ApproveRequest struct {
	// Principal, when set, is the principal the node gets instead of the
	// one it asked for.
	Principal string `json:"principal,omitempty"`
}

// RenewRequest is the body of POST /v1/certs/renew, sent over mutual TLS
// with the node's current certificate.
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// CertResponse answers a renewal.
type CertResponse struct {
	Chain [][]byte `json:"chain"`
	Index uint64   `json:"index"`
	// Gossip is the network's gossip keyring, for the renewed node.
	Gossip *GossipKeyring `json:"gossip,omitempty"`
}

// GossipKeyring is the network's gossip keyring: GET /v1/gossip/keys
// answers it to a node (over mutual TLS, with the keys), GET
// /v1/gossip/keyring and POST /v1/gossip/rotate to an operator (without).
// Index is the CA record's modify index, the keyring's version.
type GossipKeyring struct {
	Network string      `json:"network"`
	Index   uint64      `json:"index"`
	Keys    []GossipKey `json:"keys"`
}

// GossipKey is one key of a GossipKeyring: primary (gossip is encrypted
// with it), installed (being added everywhere) or retiring (read, no
// longer written; removed next).
type GossipKey struct {
	ID    string    `json:"id"`
	Key   []byte    `json:"key,omitempty"`
	State string    `json:"state"`
	Since time.Time `json:"since"`
}

// JoinRequest is the body of POST /v1/cluster/join, sent by a new root
// server over TLS pinned by the CA hash.
type JoinRequest struct {
	Token    string `json:"token"`
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	// IssuerKey is the PKIX DER public key of the joining server's issuing
	// key; the AS root signs it into the server's intermediate.
	IssuerKey []byte `json:"issuer_key"`
	// WantSealKey asks for the seal key; false when the operator passes
	// --seal-key-file.
	WantSealKey bool `json:"want_seal_key"`
}

// JoinResponse carries what a new root server needs to sign and serve.
type JoinResponse struct {
	Network    string   `json:"network"`
	Roots      [][]byte `json:"roots"`
	IssuerCert []byte   `json:"issuer_cert"`
	SealedRoot []byte   `json:"sealed_root"`
	SealKey    []byte   `json:"seal_key,omitempty"`
}

// PolicyDoc is the answer of GET /v1/policies and the body of PUT.
type PolicyDoc struct {
	Text    string `json:"text"`
	Version uint64 `json:"version"`
	// Default is true while no policy was set and the built-in one applies.
	Default bool `json:"default,omitempty"`
}

// SetPolicyRequest is the body of PUT /v1/policies: the new text and the
// version it replaces (optimistic concurrency, as `keymesh policy get`
// printed it).
type SetPolicyRequest struct {
	Text          string `json:"text"`
	ExpectVersion uint64 `json:"expect_version"`
	// Force sets a policy under which ADMIN may no longer write policies
	// (nobody could change it again but through a new policy... which
	// nobody may write). Refused without it.
	Force bool `json:"force,omitempty"`
}

// TokenRequest is the body of POST /v1/authorize and POST /v1/verify.
type TokenRequest struct {
	Token string `json:"token"`
	// Audience the token must name; default the root API's audience.
	Audience string `json:"aud,omitempty"`
	// PeerCert is the DER certificate the token was presented with, to
	// check a bound token's cnf against.
	PeerCert []byte `json:"peer_cert,omitempty"`
}

// Verification is the answer of POST /v1/verify.
type Verification struct {
	Valid     bool             `json:"valid"`
	Reason    string           `json:"reason,omitempty"`
	Message   string           `json:"message,omitempty"`
	Node      string           `json:"node,omitempty"`
	Network   string           `json:"network,omitempty"`
	Principal string           `json:"principal,omitempty"`
	KID       string           `json:"kid,omitempty"`
	Claims    *identity.Claims `json:"claims,omitempty"`
	// Actions, for POST /v1/authorize, are what the token's principal may do.
	Actions []policy.Action `json:"actions,omitempty"`
}

// RouteAuthRequest is the body of POST /v1/routes/authorizations: the
// origins given may originate Prefix (added to those it has), up to
// MaxLength (0 keeps the one it has, else the prefix's own length), from
// the AS ASN as routers see it (0 keeps the one it has, else the
// network's AS number, else none).
type RouteAuthRequest struct {
	Prefix    string   `json:"prefix"`
	Origins   []string `json:"origins"`
	MaxLength int      `json:"max_length,omitempty"`
	ASN       uint32   `json:"asn,omitempty"`
}

// RouteAuthResponse answers a change of a route authorization; Auth is
// nil once the last origin is removed. Warning says what is still missing
// for the authorization to take effect everywhere (no AS number: it is not
// served to routers).
type RouteAuthResponse struct {
	Auth    *fsm.RouteAuth `json:"auth,omitempty"`
	Removed bool           `json:"removed,omitempty"`
	Index   uint64         `json:"index"`
	Warning string         `json:"warning,omitempty"`
}

// NetworkInfo is the answer of GET /v1/network, PUT /v1/network/asn and
// PUT /v1/network/exclusive: the network's name, AS number (0: none set)
// and whether its membership is exclusive. Index is the modify index of
// the network's CA record, which holds the AS number; AnchorIndex that of
// its own trust anchor, which holds the exclusive flag: after a PUT that
// changed one, the write's index.
type NetworkInfo struct {
	Network string `json:"network"`
	ASN     uint32 `json:"asn,omitempty"`
	Index   uint64 `json:"index"`
	// Exclusive: the network's nodes refuse peers that are members of
	// other networks too (fsm.TrustAnchor.Exclusive of its own anchor).
	Exclusive   bool   `json:"exclusive"`
	AnchorIndex uint64 `json:"anchor_index"`
}

// NetworkASNRequest is the body of PUT /v1/network/asn: the network's AS
// number (fsm.CheckASN must take it; 0 is refused).
type NetworkASNRequest struct {
	ASN uint32 `json:"asn"`
}

// NetworkExclusiveRequest is the body of PUT /v1/network/exclusive:
// exclusive membership on (true) or off (false). The member is required.
type NetworkExclusiveRequest struct {
	Exclusive *bool `json:"exclusive"`
}

// AnchorRequest is the body of PUT /v1/trust/anchors/{network}: the AS
// root certificates of a federated network, in PEM.
type AnchorRequest struct {
	RootsPEM string `json:"roots_pem"`
	// Endpoints are root servers of that network (host:port) whose
	// published JWKS this cluster follows: its nodes' keys, so that its
	// nodes' tokens and routes verify here. Without them only its
	// certificates verify.
	Endpoints []string `json:"endpoints,omitempty"`
}

// AnchorInfo is a trust anchor as listed.
type AnchorInfo struct {
	Network string `json:"network"`
	// Own is this cluster's own network.
	Own bool `json:"own"`
	// Accepted: members of the network are accepted (the access list).
	Accepted bool         `json:"accepted"`
	Roots    []AnchorRoot `json:"roots"`
	// Endpoints and Keys (a federated network's): where its keys are
	// fetched and how many are held.
	Endpoints []string `json:"endpoints,omitempty"`
	Keys      int      `json:"keys"`
	Index     uint64   `json:"modify_index"`
}

// AnchorRoot is one root certificate of an anchor.
type AnchorRoot struct {
	Subject  string    `json:"subject"`
	CAHash   string    `json:"ca_hash"`
	NotAfter time.Time `json:"not_after"`
	DER      []byte    `json:"der"`
}

// AnchorResponse answers a change of a trust anchor.
type AnchorResponse struct {
	Anchor  *AnchorInfo `json:"anchor,omitempty"`
	Removed bool        `json:"removed,omitempty"`
	Index   uint64      `json:"index"`
}
