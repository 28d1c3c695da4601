package session

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Message bodies are CBOR in one canonical encoding (RFC 8949 core
// deterministic: definite lengths, shortest integers, map keys sorted),
// with small integers as map keys. A decoder refuses what that encoding
// would not produce (an unknown key, a duplicate key, an indefinite
// length, a tag, a non-shortest integer): a body decodes only if it is
// the canonical encoding of what it decodes to. New fields take new keys;
// a key is never reused for another meaning.
//
// KEEPALIVE has no body.

// Role is a speaker's relationship to its peer: the relationships of RFC
// 9234 (provider, customer, peer) and internal, two nodes of one operator
// (the default, the zero value). The numbers are ours.
type Role uint8

// Roles.
const (
	RoleInternal Role = 0
	RolePeer     Role = 1
	RoleProvider Role = 2
	RoleCustomer Role = 3
)

// ParseRole reads a role name: provider, customer, peer or internal.
func ParseRole(s string) (Role, error) {
	switch s {
	case "provider":
		return RoleProvider, nil
	case "customer":
		return RoleCustomer, nil
	case "peer":
		return RolePeer, nil
	case "internal":
		return RoleInternal, nil
	}
	return 0, fmt.Errorf("session: role %q is not provider, customer, peer or internal", s)
}

func (r Role) String() string {
	switch r {
	case RoleProvider:
		return "provider"
	case RoleCustomer:
		return "customer"
	case RolePeer:
		return "peer"
	case RoleInternal:
		return "internal"
	}
	return fmt.Sprintf("role-%d", uint8(r))
}

// Counterpart is the role the other side has: a provider's peer is its
// customer and the reverse; peer and internal are their own.
func (r Role) Counterpart() Role {
	switch r {
	case RoleProvider:
		return RoleCustomer
	case RoleCustomer:
		return RoleProvider
	}
	return r
}

func (r Role) valid() bool {
	return r == RoleProvider || r == RoleCustomer || r == RolePeer || r == RoleInternal
}

// Capabilities.
const (
	CapRouteRefresh uint16 = 2   // RFC 2918
	CapSignedRoutes uint16 = 128 // ours: UPDATEs carry signed route records
)

// Limits of message fields.
const (
	MaxNodeIDLen   = 253
	MaxTokenLen    = 8 << 10
	MaxPSKIDLen    = 64
	MaxCapabilites = 32
	MaxReasonLen   = 256
	MaxMemberships = 16
)

// Open is the first message of each side.
type Open struct {
	// NodeID and Network are the sender's; they must be those of its
	// certificate.
	NodeID  string `cbor:"1,keyasint"`
	Network string `cbor:"2,keyasint"`
	// HoldTime is the sender's proposed hold time in seconds: 0 (no
	// keepalives) or at least 3.
	HoldTime     uint16   `cbor:"3,keyasint"`
	Capabilities []uint16 `cbor:"4,keyasint,omitempty"`
	// Role is the sender's role toward the receiver.
	Role Role `cbor:"5,keyasint"`
	// Token is a JWT minted under the sender's node key for the receiver
	// (aud its SPIFFE ID), bound to the sender's TLS certificate.
	Token string `cbor:"6,keyasint"`
	// PSKID and PSKMAC are set when the peers share a pre-shared key: its
	// id, and HMAC-SHA256 over this OPEN without PSKMAC and the TLS
	// connection's exported keying material (see PSKMACOf).
	PSKID  string `cbor:"7,keyasint,omitempty"`
	PSKMAC []byte `cbor:"8,keyasint,omitempty"`
	// Memberships are the other networks the sender is a member of,
	// sorted: a node of a network that requires exclusive membership
	// refuses a peer that names any.
	Memberships []string `cbor:"9,keyasint,omitempty"`
}

// Notification ends a session and says why.
type Notification struct {
	Code    uint8  `cbor:"1,keyasint"`
	Subcode uint8  `cbor:"2,keyasint,omitempty"`
	Reason  string `cbor:"3,keyasint,omitempty"`
}

// Update carries what the routing layer sends; the session does not look
// inside.
type Update struct {
	Payload []byte `cbor:"1,keyasint"`
}

// RouteRefresh asks the peer to send its routes again.
type RouteRefresh struct {
	// Family narrows the refresh; 0 is every family.
	Family uint16 `cbor:"1,keyasint,omitempty"`
}

// Message decoding errors.
var (
	// ErrMalformed: a body that does not decode, or not canonically.
	ErrMalformed = errors.New("session: malformed message")
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxCapabilites,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// Encode returns the canonical body of a message.
func Encode(m any) ([]byte, error) {
	if _, ok := m.(Keepalive); ok {
		return nil, nil
	}
	return encMode.Marshal(m)
}

// Keepalive is the body-less KEEPALIVE.
type Keepalive struct{}

// decodeCanonical decodes b into v and checks that b is v's canonical
// encoding.
func decodeCanonical(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, b) {
		return fmt.Errorf("%w: not the canonical encoding", ErrMalformed)
	}
	return nil
}

func checkText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrMalformed, field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, field)
	}
	return nil
}

// DecodeOpen decodes and checks the shape of an OPEN body (what it says
// is checked by the session: identity, token, policy).
func DecodeOpen(b []byte) (Open, error) {
	var o Open
	if err := decodeCanonical(b, &o); err != nil {
		return Open{}, err
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"node_id", o.NodeID, MaxNodeIDLen}, {"network", o.Network, MaxNodeIDLen}, {"token", o.Token, MaxTokenLen}, {"psk_id", o.PSKID, MaxPSKIDLen}} {
		if err := checkText(f.name, f.v, f.max); err != nil {
			return Open{}, err
		}
	}
	switch {
	case o.NodeID == "" || o.Network == "" || o.Token == "":
		return Open{}, fmt.Errorf("%w: OPEN needs node_id, network and token", ErrMalformed)
	case !o.Role.valid():
		return Open{}, fmt.Errorf("%w: unknown role %d", ErrMalformed, o.Role)
	case (o.PSKID == "") != (len(o.PSKMAC) == 0):
		return Open{}, fmt.Errorf("%w: psk_id and psk_mac come together", ErrMalformed)
	case len(o.PSKMAC) > 64:
		return Open{}, fmt.Errorf("%w: psk_mac of %d bytes", ErrMalformed, len(o.PSKMAC))
	case len(o.Memberships) > MaxMemberships:
		return Open{}, fmt.Errorf("%w: %d memberships, more than %d", ErrMalformed, len(o.Memberships), MaxMemberships)
	}
	for i, n := range o.Memberships {
		if err := checkText("memberships", n, MaxNodeIDLen); err != nil {
			return Open{}, err
		}
		switch {
		case n == "" || n == o.Network:
			return Open{}, fmt.Errorf("%w: memberships names %q (the other networks of the sender)", ErrMalformed, n)
		case i > 0 && n <= o.Memberships[i-1]:
			return Open{}, fmt.Errorf("%w: memberships not sorted and distinct", ErrMalformed)
		}
	}
	return o, nil
}

// DecodeNotification decodes a NOTIFICATION body.
func DecodeNotification(b []byte) (Notification, error) {
	var n Notification
	if err := decodeCanonical(b, &n); err != nil {
		return Notification{}, err
	}
	if err := checkText("reason", n.Reason, MaxReasonLen); err != nil {
		return Notification{}, err
	}
	if n.Code == 0 {
		return Notification{}, fmt.Errorf("%w: NOTIFICATION without a code", ErrMalformed)
	}
	return n, nil
}

// DecodeUpdate decodes an UPDATE body.
func DecodeUpdate(b []byte) (Update, error) {
	var u Update
	if err := decodeCanonical(b, &u); err != nil {
		return Update{}, err
	}
	if len(u.Payload) == 0 {
		return Update{}, fmt.Errorf("%w: UPDATE without a payload", ErrMalformed)
	}
	return u, nil
}

// DecodeRouteRefresh decodes a ROUTE-REFRESH body.
func DecodeRouteRefresh(b []byte) (RouteRefresh, error) {
	var r RouteRefresh
	err := decodeCanonical(b, &r)
	return r, err
}

// notification builds a NOTIFICATION, its reason cut to the limit.
func notification(code, sub uint8, format string, args ...any) Notification {
	r := fmt.Sprintf(format, args...)
	if len(r) > MaxReasonLen {
		r = r[:MaxReasonLen]
		for !utf8.ValidString(r) {
			r = r[:len(r)-1]
		}
	}
	return Notification{Code: code, Subcode: sub, Reason: r}
}
