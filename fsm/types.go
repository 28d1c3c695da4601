package fsm

import (
	"encoding/json"
	"math/big"
	"strconv"
	"time"
)

// MsgType is the first byte of every command: which change it asks for.
type MsgType uint8

// IgnoreUnknownFlag marks a command that replicas which do not know its type
// may skip: such a command is consumed (the index advances, Result.Err is nil,
// Result.Ignored is true) and changes nothing. A type this replica knows is
// applied normally whether or not the flag is set. An unknown type WITHOUT the
// flag panics the replica: applying the rest of the log without it would make
// this replica diverge from the others, so it must stop and be upgraded.
const IgnoreUnknownFlag MsgType = 0x80

// Command types. The numbers are part of the log format: never reuse or
// renumber one; add new types at the end.
const (
	MsgServerPut           MsgType = iota + 1 // ServerPut: add or update a root server record.
	MsgServerRemove                           // ServerRemove: delete a root server record.
	msgRemovedCAInit                          // removed before the first release: a CA alone (now part of Genesis); never reuse
	MsgIssuerPut                              // IssuerPut: a root server's issuing certificate.
	MsgJoinTokenCreate                        // JoinTokenCreate: ErrExists on the same hash or id.
	MsgJoinTokenConsume                       // JoinTokenConsume: uses one use of a join token.
	MsgJoinTokenRevoke                        // JoinTokenRevoke: marks a join token revoked.
	MsgRevoke                                 // Revoke: records a revocation; ErrExists if already revoked.
	MsgPruneRevocations                       // PruneRevocations: drops what is past its time.
	MsgTrustAnchorPut                         // TrustAnchorPut: a network's roots and access list.
	msgRemovedNodePut                         // removed before the first release: a node record by hand; never reuse
	msgRemovedIssuedPut                       // removed before the first release: an issued certificate by hand; never reuse
	MsgJWKPut                                 // JWKPut: a public key in the JWKS.
	msgRemovedJWKSetState                     // removed before the first release: a key's state by hand; never reuse
	MsgRegistrationCreate                     // RegistrationCreate: a node's registration request.
	MsgRegistrationApprove                    // RegistrationApprove: pending -> approved with its certificate.
	MsgRegistrationDeny                       // RegistrationDeny: pending -> denied.
	MsgPolicySet                              // PolicySet: the policy text, compare-and-set on its version.
	MsgRouteAuthPut                           // RouteAuthPut: who may originate a prefix.
	MsgCAUpdate                               // CAUpdate: replaces a network's CA record (root rotation), compare-and-set.
	msgRemovedJWKDelete                       // removed before the first release: a key deleted by hand; never reuse
	MsgRouteAuthDelete                        // RouteAuthDelete: removes a route authorization.
	MsgTrustAnchorDelete                      // TrustAnchorDelete: removes a federated network's anchor.
	MsgNodeCertRenew                          // NodeCertRenew: records a renewed node certificate and points the node at it.
	MsgGenesis                                // Genesis: a network's first state, in one command, on an empty state only.
	MsgExclusiveSet                           // ExclusiveSet: the own network's exclusive membership on or off, compare-and-set.

	msgTypeEnd // one past the last known type
)

var msgTypeNames = [...]string{
	MsgServerPut:           "server_put",
	MsgServerRemove:        "server_remove",
	msgRemovedCAInit:       "removed_ca_init",
	MsgIssuerPut:           "issuer_put",
	MsgJoinTokenCreate:     "join_token_create",
	MsgJoinTokenConsume:    "join_token_consume",
	MsgJoinTokenRevoke:     "join_token_revoke",
	MsgRevoke:              "revoke",
	MsgPruneRevocations:    "prune_revocations",
	MsgTrustAnchorPut:      "trust_anchor_put",
	msgRemovedNodePut:      "removed_node_put",
	msgRemovedIssuedPut:    "removed_issued_put",
	MsgJWKPut:              "jwk_put",
	msgRemovedJWKSetState:  "removed_jwk_set_state",
	MsgRegistrationCreate:  "registration_create",
	MsgRegistrationApprove: "registration_approve",
	MsgRegistrationDeny:    "registration_deny",
	MsgPolicySet:           "policy_set",
	MsgRouteAuthPut:        "route_auth_put",
	MsgCAUpdate:            "ca_update",
	msgRemovedJWKDelete:    "removed_jwk_delete",
	MsgRouteAuthDelete:     "route_auth_delete",
	MsgTrustAnchorDelete:   "trust_anchor_delete",
	MsgNodeCertRenew:       "node_cert_renew",
	MsgGenesis:             "genesis",
	MsgExclusiveSet:        "exclusive_set",
}

// String returns the command's name (e.g. "revoke"); the ignorable flag is
// shown as a "+ignorable" suffix and unknown types as "msg_0x42".
func (t MsgType) String() string {
	base := t &^ IgnoreUnknownFlag
	name := ""
	if base < msgTypeEnd && base > 0 {
		name = msgTypeNames[base]
	} else {
		name = "msg_0x" + strconv.FormatUint(uint64(base), 16)
	}
	if t&IgnoreUnknownFlag != 0 {
		name += "+ignorable"
	}
	return name
}

// Known reports whether this replica knows the type (ignoring the flag).
// The numbers of types removed before the first release are not known: no
// log holds them, and Apply would stop on one.
func (t MsgType) Known() bool {
	base := t &^ IgnoreUnknownFlag
	return base > 0 && base < msgTypeEnd && !removed(base)
}

func removed(t MsgType) bool {
	switch t {
	case msgRemovedCAInit, msgRemovedNodePut, msgRemovedIssuedPut, msgRemovedJWKSetState, msgRemovedJWKDelete:
		return true
	}
	return false
}

// CurrentVersion is the payload version Encode writes for t, and the newest
// version Apply accepts. Every type is at version 1 so far. ok is false for
// types this replica does not know.
func CurrentVersion(t MsgType) (v uint16, ok bool) {
	if !t.Known() {
		return 0, false
	}
	return 1, true
}

// Indexes are the Raft indexes at which a record was created and last
// modified. Apply sets them; values in a payload are ignored.
type Indexes struct {
	CreateIndex uint64 `json:"create_index,omitzero"`
	ModifyIndex uint64 `json:"modify_index,omitzero"`
}

func (i *Indexes) meta() *Indexes { return i }

// Server statuses.
const (
	ServerJoining = "joining"
	ServerVoter   = "voter"
	ServerRemoved = "removed"
)

// Server is a root server of this cluster.
type Server struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Status   string `json:"status"` // ServerJoining, ServerVoter or ServerRemoved
	Indexes
}

// CA is a network's certificate authority: its root certificates in their
// rotation slots, the root key sealed under the servers' seal key, and
// cross-signs between old and new roots. Certificates are DER.
type CA struct {
	Network    string   `json:"network"`
	Active     []byte   `json:"active"`
	Prepared   [][]byte `json:"prepared"`
	Retired    [][]byte `json:"retired"`
	SealedKey  []byte   `json:"sealed_key"`
	CrossSigns [][]byte `json:"cross_signs"`
	// GossipKeys is the network's gossip keyring, each key sealed under
	// the seal key as the AS root key is: the primary first, then keys
	// being installed or removed (install, use, remove).
	GossipKeys []GossipKey `json:"gossip_keys,omitempty"`
	// ASN is the network's autonomous system number, 0 when none is set
	// (CheckASN holds for any other value). Route authorizations without
	// an AS of their own take it when they are made.
	ASN uint32 `json:"asn,omitempty"`
	Indexes
}

// GossipKey is one key of the gossip keyring (AES-256, sealed).
type GossipKey struct {
	ID     string    `json:"id"`
	Sealed []byte    `json:"sealed"`
	State  string    `json:"state"`
	Since  time.Time `json:"since"` // when it was installed; for a retiring key, when it retired
	// After is the state index the key was made at: a node revoked after
	// it may hold the key, so a node revocation of a later index starts a
	// rotation.
	After uint64 `json:"after"`
}

// Gossip key states: a rotation installs a key everywhere, uses it
// (primary; the old primary retiring), then removes the retiring key.
const (
	GossipKeyPrimary   = "primary"
	GossipKeyInstalled = "installed"
	GossipKeyRetiring  = "retiring"
)

// Issuer statuses.
const (
	IssuerActive  = "active"
	IssuerRevoked = "revoked"
)

// Issuer is a root server's issuing intermediate. A revoked issuer cannot
// become active again and no certificate of it can be recorded.
type Issuer struct {
	ID      string `json:"id"` // the root server's name
	Network string `json:"network"`
	Cert    []byte `json:"cert"` // DER
	Status  string `json:"status"`
	Indexes
}

// Join token kinds.
const (
	TokenKindRoot = "root"
	TokenKindNode = "node"
)

// JoinToken lets a root server or a node join. Only the hex SHA-256 of the
// secret is replicated.
type JoinToken struct {
	ID          string    `json:"id"`   // short public id, e.g. the first 16 hex digits of Hash
	Hash        string    `json:"hash"` // lowercase hex SHA-256 of the secret (64 digits)
	Kind        string    `json:"kind"` // TokenKindRoot or TokenKindNode
	Principal   string    `json:"principal,omitempty"`
	NodeID      string    `json:"node_id,omitempty"` // when set, only this node id (or server name) may use it
	Uses        int       `json:"uses"`
	Used        int       `json:"used"`
	Expiry      time.Time `json:"expiry"`
	Revoked     bool      `json:"revoked"`
	Description string    `json:"description,omitempty"`
	// DNSNames are DNS names under the network's domain that a node joining
	// with this token may hold besides <node-id>.<network>.
	DNSNames []string `json:"dns_names,omitempty"`
	Indexes
}

// RevocationKind says what a revocation's ID names.
type RevocationKind string

// Revocation kinds.
const (
	RevocationCert  RevocationKind = "cert"  // ID is a certificate serial (FormatSerial)
	RevocationToken RevocationKind = "token" // ID is a token's jti
	RevocationKey   RevocationKind = "key"   // ID is a JWK kid
	RevocationNode  RevocationKind = "node"  // ID is a node id
)

// Revocation records that something is revoked. It is keyed by Kind and ID.
type Revocation struct {
	Kind   RevocationKind `json:"kind"`
	ID     string         `json:"id"`
	Reason string         `json:"reason,omitempty"`
	// Time is the command's timestamp; a value in the payload is ignored.
	Time time.Time `json:"time,omitzero"`
	// PruneAfter is when the revoked thing has expired anyway (its original
	// expiry); PruneRevocations drops the record after it. Zero keeps it.
	PruneAfter time.Time `json:"prune_after,omitzero"`
	Indexes
}

// TrustAnchor holds the roots of one network (ours or a federated one) and
// its access list: the networks whose members are accepted.
type TrustAnchor struct {
	Network string   `json:"network"`
	Roots   [][]byte `json:"roots"` // DER
	Accept  []string `json:"accept"`
	// Endpoints are root servers (host:port) of a federated network whose
	// published JWKS the leader follows, verified against Roots; Keys is
	// that JWKS as last fetched: the keys the network's nodes sign
	// tokens and routes with, each with its certificate chain.
	Endpoints []string       `json:"endpoints,omitempty"`
	Keys      []FederatedKey `json:"keys,omitempty"`
	// Exclusive, on the own network's anchor only (Apply refuses it on a
	// federated one), is exclusive membership: the network's nodes refuse
	// peers that are members of other networks too. ExclusiveSet sets it.
	Exclusive bool `json:"exclusive,omitempty"`
	Indexes
}

// FederatedKey is a key of a federated network's node, as its roots
// publish it.
type FederatedKey struct {
	KID  string `json:"kid"`
	Node string `json:"node"`
	Key  []byte `json:"key"` // the JWK's JSON, x5c chain included
}

// Node statuses.
const (
	NodeActive  = "active"
	NodeRevoked = "revoked"
)

// Principals a node or token may carry.
const (
	PrincipalAdmin         = "ADMIN"
	PrincipalNode          = "NODE"
	PrincipalNodeCustodian = "NODE_CUSTODIAN"
	PrincipalDataCustodian = "DATA_CUSTODIAN"
	PrincipalUser          = "USER"
)

// Node is a registered mesh member. A revoked node cannot become active again.
type Node struct {
	ID         string    `json:"id"`
	Network    string    `json:"network"`
	Principal  string    `json:"principal"`
	Status     string    `json:"status"`
	CertSerial string    `json:"cert_serial,omitempty"`
	PrevSerial string    `json:"prev_serial,omitempty"`
	CertExpiry time.Time `json:"cert_expiry,omitzero"`
	// DNSNames are the DNS SANs of the node's certificate: while the node
	// holds its id, no other node may hold them.
	DNSNames []string `json:"dns_names,omitempty"`
	Indexes
}

// ActiveAt reports whether the node holds its id at now: it is active and
// its certificate has not expired (a node whose certificate expired cannot
// renew, so it may register again).
func (n Node) ActiveAt(now time.Time) bool {
	return n.Status == NodeActive && (n.CertExpiry.IsZero() || now.Before(n.CertExpiry))
}

// Issued records a certificate an issuer signed, keyed by issuer and serial.
type Issued struct {
	Issuer   string    `json:"issuer"`
	Serial   string    `json:"serial"` // FormatSerial of the certificate's serial number
	NodeID   string    `json:"node_id"`
	NotAfter time.Time `json:"not_after"`
	Cert     []byte    `json:"cert"` // DER
	Indexes
}

// JWK states.
const (
	JWKStaged   = "staged"
	JWKActive   = "active"
	JWKRetiring = "retiring"
)

// JWK is a public key in the replicated JWKS.
type JWK struct {
	KID      string          `json:"kid"`
	Key      json.RawMessage `json:"key"`  // public JWK (may carry x5c); private members are rejected
	Node     string          `json:"node"` // owner: a node id or a root server name
	State    string          `json:"state"`
	NotAfter time.Time       `json:"not_after,omitzero"`
	// RetiringSince is when the key stopped signing new tokens (its node
	// rotated to another key); tokens it signed before keep verifying until
	// NotAfter.
	RetiringSince time.Time `json:"retiring_since,omitzero"`
	Indexes
}

// Registration statuses.
const (
	RegistrationPending  = "pending"
	RegistrationApproved = "approved"
	RegistrationDenied   = "denied"
)

// Registration is a node's request for a certificate. Once approved, its
// certificate is Store.Issued(Issuer, Serial); the issuance is committed
// before the registration reads approved.
type Registration struct {
	ID        string    `json:"id"`
	NodeID    string    `json:"node_id"`
	Network   string    `json:"network"`
	Principal string    `json:"principal"`
	CSR       []byte    `json:"csr"`                 // DER
	DNSNames  []string  `json:"dns_names,omitempty"` // DNS SANs asked for (up to MaxDNSNames)
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Serial    string    `json:"serial,omitempty"` // of the certificate once approved
	Issuer    string    `json:"issuer,omitempty"`
	Created   time.Time `json:"created,omitzero"` // the creating command's timestamp
	// Source is the client address the request came from (for the limits
	// on pending registrations per source).
	Source string `json:"source,omitempty"`
	Indexes
}

// Policy is the policy set text; Version counts PolicySet commands.
type Policy struct {
	Text    string `json:"text"`
	Version uint64 `json:"version"`
	Indexes
}

// RouteAuth says which origins may announce a prefix and up to which length.
type RouteAuth struct {
	Prefix    string   `json:"prefix"` // canonical CIDR (netip.Prefix.Masked().String())
	Origins   []string `json:"origins"`
	MaxLength int      `json:"max_length"`
	// ASN is the autonomous system that may originate the prefix as
	// routers see it (an RPKI ROA's origin AS). 0: none, and then the
	// authorization is not served to routers.
	ASN uint32 `json:"asn,omitempty"`
	Indexes
}

// FormatSerial is the one spelling of a certificate serial number used in
// this state: lowercase hex without leading zeros (big.Int.Text(16)). Apply
// rejects any other spelling, so two spellings of one serial cannot slip past
// the uniqueness check.
func FormatSerial(serial *big.Int) string { return serial.Text(16) }
