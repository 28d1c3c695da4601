package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits on payload fields. Apply rejects larger values with ErrInvalid.
const (
	MaxIDLen          = 256      // ids, names, addresses, kids, jtis
	MaxNetworkLen     = 253      // network names (hostname syntax)
	MaxTextLen        = 1024     // descriptions and reasons
	MaxDERLen         = 16 << 10 // one certificate or CSR
	MaxSealedKeyLen   = 4 << 10
	MaxGossipKeys     = 4
	MaxJWKLen         = 8 << 10
	MaxPolicyLen      = 1 << 20
	MaxListLen        = 64 // certificates in a list, route origins
	MaxAcceptLen      = 256
	MaxTokenUses      = 1_000_000
	MaxDNSNames       = 16
	MaxEndpoints      = 8   // a federated network's root servers
	MaxFederatedKeys  = 512 // keys of one federated network: their anchor record fits one command (2 MiB)
	maxSerialHexDigit = 64
)

// AS numbers CheckASN refuses.
const (
	// asTrans is AS_TRANS (RFC 6793): the stand-in a 2-byte-only BGP
	// speaker sees for a 4-byte AS. It is never anyone's own AS.
	asTrans uint32 = 23456
	// asLast16 and asLast32 are the last 16-bit and 32-bit AS numbers,
	// reserved (RFC 7300).
	asLast16 uint32 = 65535
	asLast32 uint32 = 4294967295
)

// CheckASN reports whether asn may be a network's AS number or a route
// authorization's origin AS. It refuses 0 (RFC 7607: no AS; callers for
// which 0 means "none set" check only a nonzero value), AS_TRANS 23456
// (RFC 6793) and the reserved last AS numbers 65535 and 4294967295 (RFC
// 7300). Its errors wrap ErrASN.
func CheckASN(asn uint32) error {
	switch asn {
	case 0:
		return fmt.Errorf("%w: AS 0 names no AS (RFC 7607)", ErrASN)
	case asTrans:
		return fmt.Errorf("%w: AS %d is AS_TRANS (RFC 6793), never a network's own", ErrASN, asn)
	case asLast16, asLast32:
		return fmt.Errorf("%w: AS %d is reserved (RFC 7300)", ErrASN, asn)
	}
	return nil
}

// checkOptionalASN refuses a nonzero asn that CheckASN refuses; 0 is
// none set.
func checkOptionalASN(field string, asn uint32) *CommandError {
	if asn == 0 {
		return nil
	}
	if err := CheckASN(asn); err != nil {
		return fail(ErrInvalid, "%s: %v", field, err)
	}
	return nil
}

// minTime and maxTime bound every time in a payload so that it fits unix
// nanoseconds (1970 to 2262).
var (
	minTime = time.Unix(0, 1)
	maxTime = time.Unix(0, 1<<63-1)
)

func validTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(minTime) && !t.After(maxTime))
}

func checkTime(field string, t time.Time, required bool) *CommandError {
	if t.IsZero() {
		if required {
			return fail(ErrInvalid, "%s is required", field)
		}
		return nil
	}
	if !validTime(t) {
		return fail(ErrInvalid, "%s %s is outside 1970..2262", field, t.UTC().Format(time.RFC3339))
	}
	return nil
}

// normTime drops location and monotonic readings so that equal instants
// encode equally.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// checkWord accepts 1..max printable ASCII characters without spaces: ids,
// names, addresses.
func checkWord(field, s string, max int, required bool) *CommandError {
	if s == "" {
		if required {
			return fail(ErrInvalid, "%s is required", field)
		}
		return nil
	}
	if len(s) > max {
		return fail(ErrInvalid, "%s is %d bytes, limit %d", field, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fail(ErrInvalid, "%s has a character outside printable ASCII at byte %d", field, i)
		}
	}
	return nil
}

// checkNodeID accepts a node id of a new registration: a word of
// [a-z0-9._-], lower case only, so that one node cannot appear under two
// spellings.
func checkNodeID(field, s string) *CommandError {
	if err := checkWord(field, s, MaxIDLen, true); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fail(ErrInvalid, "%s %q has a %q at byte %d; node ids are lower-case a-z 0-9 . _ -", field, s, rune(c), i)
		}
	}
	return nil
}

// checkNetwork accepts a lowercase hostname: labels of [a-z0-9-], 1..63
// bytes, not starting or ending with '-'.
func checkNetwork(field, s string) *CommandError {
	if s == "" {
		return fail(ErrInvalid, "%s is required", field)
	}
	if len(s) > MaxNetworkLen {
		return fail(ErrInvalid, "%s is %d bytes, limit %d", field, len(s), MaxNetworkLen)
	}
	label := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if label == 0 || label > 63 || s[i-label] == '-' || s[i-1] == '-' {
				return fail(ErrInvalid, "%s %q is not a lowercase host name", field, s)
			}
			label = 0
			continue
		}
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fail(ErrInvalid, "%s %q is not a lowercase host name", field, s)
		}
		label++
	}
	return nil
}

// checkText accepts valid UTF-8 up to max bytes without control characters
// (newline and tab allowed when multiline).
func checkText(field, s string, max int, multiline bool) *CommandError {
	if len(s) > max {
		return fail(ErrInvalid, "%s is %d bytes, limit %d", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fail(ErrInvalid, "%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			if multiline && (r == '\n' || r == '\t' || r == '\r') {
				continue
			}
			return fail(ErrInvalid, "%s contains a control character", field)
		}
	}
	return nil
}

func checkOneOf(field, s string, allowed ...string) *CommandError {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return fail(ErrInvalid, "%s %q is not one of %q", field, s, allowed)
}

func checkPrincipal(field, s string, required bool) *CommandError {
	if s == "" && !required {
		return nil
	}
	return checkOneOf(field, s, PrincipalAdmin, PrincipalNode, PrincipalNodeCustodian, PrincipalDataCustodian, PrincipalUser)
}

// checkSerial accepts FormatSerial's spelling only.
func checkSerial(field, s string, required bool) *CommandError {
	if s == "" {
		if required {
			return fail(ErrInvalid, "%s is required", field)
		}
		return nil
	}
	if len(s) > maxSerialHexDigit {
		return fail(ErrInvalid, "%s is %d hex digits, limit %d", field, len(s), maxSerialHexDigit)
	}
	if s[0] == '0' && len(s) > 1 {
		return fail(ErrInvalid, "%s %q has a leading zero (use FormatSerial)", field, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fail(ErrInvalid, "%s %q is not lowercase hex (use FormatSerial)", field, s)
		}
	}
	return nil
}

// checkHash accepts a lowercase hex SHA-256.
func checkHash(field, s string) *CommandError {
	if len(s) != 64 {
		return fail(ErrInvalid, "%s must be 64 lowercase hex digits", field)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fail(ErrInvalid, "%s must be 64 lowercase hex digits", field)
		}
	}
	return nil
}

// checkDER accepts a plausible DER SEQUENCE (a certificate or CSR) of at most
// MaxDERLen bytes. The certificate itself was checked before proposing.
func checkDER(field string, b []byte, required bool) *CommandError {
	if len(b) == 0 {
		if required {
			return fail(ErrInvalid, "%s is required", field)
		}
		return nil
	}
	if len(b) > MaxDERLen {
		return fail(ErrInvalid, "%s is %d bytes, limit %d", field, len(b), MaxDERLen)
	}
	if b[0] != 0x30 || len(b) < 2 {
		return fail(ErrInvalid, "%s is not DER (no SEQUENCE)", field)
	}
	return nil
}

func checkDERList(field string, list [][]byte, min int) *CommandError {
	if len(list) < min {
		return fail(ErrInvalid, "%s needs at least %d certificate(s)", field, min)
	}
	if len(list) > MaxListLen {
		return fail(ErrInvalid, "%s has %d entries, limit %d", field, len(list), MaxListLen)
	}
	for _, b := range list {
		if err := checkDER(field, b, true); err != nil {
			return err
		}
	}
	return nil
}

// privateJWKMembers are the JWK members that carry private or symmetric key
// material (RFC 7518 section 6). A JWK holding any of them is rejected: node
// private keys never leave their node.
var privateJWKMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// checkJWK accepts a public JWK object and returns it compacted.
func checkJWK(field string, raw json.RawMessage) (json.RawMessage, *CommandError) {
	if len(raw) == 0 {
		return nil, fail(ErrInvalid, "%s is required", field)
	}
	if len(raw) > MaxJWKLen {
		return nil, fail(ErrInvalid, "%s is %d bytes, limit %d", field, len(raw), MaxJWKLen)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return nil, fail(ErrInvalid, "%s is not a JSON object", field)
	}
	kty, ok := members["kty"]
	if !ok || len(kty) < 3 || kty[0] != '"' {
		return nil, fail(ErrInvalid, "%s has no kty", field)
	}
	for _, m := range privateJWKMembers {
		if _, ok := members[m]; ok {
			return nil, fail(ErrInvalid, "%s carries private key member %q", field, m)
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fail(ErrInvalid, "%s: %v", field, err)
	}
	return json.RawMessage(buf.Bytes()), nil
}

func checkUniqueWords(field string, list []string, max, maxLen int, network bool) *CommandError {
	if len(list) > max {
		return fail(ErrInvalid, "%s has %d entries, limit %d", field, len(list), max)
	}
	seen := make(map[string]struct{}, len(list))
	for _, s := range list {
		var err *CommandError
		if network {
			err = checkNetwork(field, s)
		} else {
			err = checkWord(field, s, maxLen, true)
		}
		if err != nil {
			return err
		}
		if _, dup := seen[s]; dup {
			return fail(ErrInvalid, "%s lists %q twice", field, s)
		}
		seen[s] = struct{}{}
	}
	return nil
}

// checkDNSNames accepts up to MaxDNSNames distinct host names (letters,
// digits, '-', labels of 1..63, at most 253 bytes), each optionally
// starting with "*." for a wildcard.
func checkDNSNames(field string, names []string) *CommandError {
	if len(names) > MaxDNSNames {
		return fail(ErrInvalid, "%s has %d entries, limit %d", field, len(names), MaxDNSNames)
	}
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		if _, dup := seen[n]; dup {
			return fail(ErrInvalid, "%s lists %q twice", field, n)
		}
		seen[n] = struct{}{}
		h := n
		if len(h) > 2 && h[:2] == "*." {
			h = h[2:]
		}
		if h == "" || len(n) > MaxNetworkLen {
			return fail(ErrInvalid, "%s %q is not a host name", field, n)
		}
		label := 0
		for i := 0; i <= len(h); i++ {
			if i == len(h) || h[i] == '.' {
				if label == 0 || label > 63 || h[i-label] == '-' || h[i-1] == '-' {
					return fail(ErrInvalid, "%s %q is not a host name", field, n)
				}
				label = 0
				continue
			}
			c := h[i]
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return fail(ErrInvalid, "%s %q is not a host name", field, n)
			}
			label++
		}
	}
	return nil
}
