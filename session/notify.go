package session

import "fmt"

// NOTIFICATION codes and subcodes: BGP's (RFC 4271, 4486, 6608, 7313,
// 9234), and ours where BGP has none (128 and up).
const (
	CodeHeader       uint8 = 1 // Message Header Error
	CodeOpen         uint8 = 2 // OPEN Message Error
	CodeUpdate       uint8 = 3 // UPDATE Message Error
	CodeHoldExpired  uint8 = 4 // Hold Timer Expired
	CodeFSM          uint8 = 5 // Finite State Machine Error
	CodeCease        uint8 = 6 // Cease
	CodeRouteRefresh uint8 = 7 // ROUTE-REFRESH Message Error
)

// Message Header Error subcodes.
const (
	SubNotSynchronized uint8 = 1 // the magic bytes are wrong
	SubBadLength       uint8 = 2
	SubBadType         uint8 = 3
	SubBadVersion      uint8 = 128 // ours: an unknown frame version
)

// OPEN Message Error subcodes.
const (
	SubOpenVersion     uint8 = 1  // unsupported version
	SubOpenBadPeer     uint8 = 2  // the node id is not the certificate's, or not the one dialled
	SubOpenBadNetwork  uint8 = 3  // the network is not the certificate's, or not accepted
	SubOpenHoldTime    uint8 = 6  // unacceptable hold time
	SubOpenCapability  uint8 = 7  // unsupported capability
	SubOpenRole        uint8 = 11 // role mismatch (RFC 9234)
	SubOpenAuth        uint8 = 128
	SubOpenPolicy      uint8 = 129 // Cedar refused peer.connect
	SubOpenPSK         uint8 = 130
	SubOpenMalformed   uint8 = 131
	SubOpenReplay      uint8 = 132 // the token was shown before
	SubOpenCredentials uint8 = 133 // the peer's certificate, key or node is revoked or expired
	SubOpenExclusive   uint8 = 134 // this node's network requires exclusive membership; the peer is a member of others too
)

// FSM Error subcodes (RFC 6608).
const (
	SubFSMOpenSent    uint8 = 1
	SubFSMOpenConfirm uint8 = 2
	SubFSMEstablished uint8 = 3
)

// Cease subcodes (RFC 4486), and ours.
const (
	SubCeaseMaxPrefixes    uint8 = 1
	SubCeaseShutdown       uint8 = 2
	SubCeaseDeconfigured   uint8 = 3
	SubCeaseReset          uint8 = 4
	SubCeaseRejected       uint8 = 5
	SubCeaseConfigChange   uint8 = 6
	SubCeaseCollision      uint8 = 7
	SubCeaseOutOfResources uint8 = 8
	SubCeaseRevoked        uint8 = 128 // a credential of the peer was revoked
	SubCeaseExpired        uint8 = 129 // the peer's certificate expired
)

// String names a code and subcode ("cease/credential-revoked").
func (n Notification) String() string {
	s := codeName(n.Code) + "/" + subcodeName(n.Code, n.Subcode)
	if n.Reason != "" {
		s += ": " + n.Reason
	}
	return s
}

// Name is the code and subcode without the reason, for metrics and logs.
func (n Notification) Name() string { return codeName(n.Code) + "/" + subcodeName(n.Code, n.Subcode) }

func codeName(c uint8) string {
	switch c {
	case CodeHeader:
		return "header"
	case CodeOpen:
		return "open"
	case CodeUpdate:
		return "update"
	case CodeHoldExpired:
		return "hold-timer-expired"
	case CodeFSM:
		return "fsm"
	case CodeCease:
		return "cease"
	case CodeRouteRefresh:
		return "route-refresh"
	}
	return fmt.Sprintf("code-%d", c)
}

func subcodeName(c, s uint8) string {
	names := map[uint8]map[uint8]string{
		CodeHeader: {SubNotSynchronized: "not-synchronized", SubBadLength: "bad-length", SubBadType: "bad-type", SubBadVersion: "bad-version"},
		CodeOpen: {SubOpenVersion: "version", SubOpenBadPeer: "bad-peer", SubOpenBadNetwork: "bad-network", SubOpenHoldTime: "hold-time",
			SubOpenCapability: "capability", SubOpenRole: "role-mismatch", SubOpenAuth: "authentication", SubOpenPolicy: "policy",
			SubOpenPSK: "psk", SubOpenMalformed: "malformed", SubOpenReplay: "replay", SubOpenCredentials: "credentials", SubOpenExclusive: "exclusive"},
		CodeFSM: {SubFSMOpenSent: "open-sent", SubFSMOpenConfirm: "open-confirm", SubFSMEstablished: "established"},
		CodeCease: {SubCeaseMaxPrefixes: "max-prefixes", SubCeaseShutdown: "shutdown", SubCeaseDeconfigured: "deconfigured",
			SubCeaseReset: "reset", SubCeaseRejected: "rejected", SubCeaseConfigChange: "config-change", SubCeaseCollision: "collision",
			SubCeaseOutOfResources: "out-of-resources", SubCeaseRevoked: "credential-revoked", SubCeaseExpired: "credential-expired"},
	}
	if s == 0 {
		return "unspecific"
	}
	if n, ok := names[c][s]; ok {
		return n
	}
	return fmt.Sprintf("%d", s)
}

// NotificationError is a session ended by a NOTIFICATION, sent or
// received.
type NotificationError struct {
	Notification Notification
	Sent         bool // we sent it; else the peer did
}

func (e *NotificationError) Error() string {
	if e.Sent {
		return "session: NOTIFICATION sent: " + e.Notification.String()
	}
	return "session: NOTIFICATION received: " + e.Notification.String()
}
