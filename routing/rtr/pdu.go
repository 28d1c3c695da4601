package rtr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol versions: 0 is RFC 6810, 1 is RFC 8210. A cache answers a
// router in the version of its first query, up to MaxVersion.
const (
	Version0   uint8 = 0
	Version1   uint8 = 1
	MaxVersion       = Version1
)

// PDU types (RFC 8210 section 5; the IANA registry "rpki-rtr-pdu").
const (
	TypeSerialNotify  uint8 = 0
	TypeSerialQuery   uint8 = 1
	TypeResetQuery    uint8 = 2
	TypeCacheResponse uint8 = 3
	TypeIPv4Prefix    uint8 = 4
	TypeIPv6Prefix    uint8 = 6
	TypeEndOfData     uint8 = 7
	TypeCacheReset    uint8 = 8
	TypeRouterKey     uint8 = 9
	TypeErrorReport   uint8 = 10
)

// ErrorCode is the code of an Error Report (RFC 8210 section 12).
type ErrorCode uint16

// Error codes.
const (
	CodeCorruptData         ErrorCode = 0
	CodeInternalError       ErrorCode = 1
	CodeNoDataAvailable     ErrorCode = 2
	CodeInvalidRequest      ErrorCode = 3
	CodeUnsupportedVersion  ErrorCode = 4
	CodeUnsupportedPDUType  ErrorCode = 5
	CodeWithdrawalOfUnknown ErrorCode = 6
	CodeDuplicateAnnounce   ErrorCode = 7
	CodeUnexpectedVersion   ErrorCode = 8
)

var codeNames = map[ErrorCode]string{
	CodeCorruptData: "corrupt_data", CodeInternalError: "internal_error", CodeNoDataAvailable: "no_data_available",
	CodeInvalidRequest: "invalid_request", CodeUnsupportedVersion: "unsupported_version",
	CodeUnsupportedPDUType: "unsupported_pdu_type", CodeWithdrawalOfUnknown: "withdrawal_of_unknown",
	CodeDuplicateAnnounce: "duplicate_announcement", CodeUnexpectedVersion: "unexpected_version",
}

// String is the code's name as the metrics label it: corrupt_data, ...
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// Fatal reports whether the code ends the session (all but No Data
// Available, RFC 8210 section 12).
func (c ErrorCode) Fatal() bool { return c != CodeNoDataAvailable }

// Sizes. headerLen is the common header; DefaultMaxPDU bounds what a
// cache reads from a router: the longest PDU a router sends is an Error
// Report, which carries the PDU it complains of and a text.
const (
	headerLen     = 8
	DefaultMaxPDU = 64 << 10
	maxErrorText  = 1024
)

var (
	// ErrMalformed: the bytes are not a PDU of this protocol (wrong length,
	// bad field). errors.As to *ProtocolError gives the Error Report code.
	ErrMalformed = errors.New("rtr: malformed PDU")
	// ErrTooLong: a PDU's length field exceeds the limit.
	ErrTooLong = errors.New("rtr: PDU longer than the limit")
)

// ProtocolError is a PDU the cache refuses: the Error Report it answers
// with (Code, the offending PDU, a text).
type ProtocolError struct {
	Code ErrorCode
	PDU  []byte // the offending PDU, or its header when the body was not read
	Text string
	err  error // ErrMalformed, ErrTooLong or nil
}

func (e *ProtocolError) Error() string { return fmt.Sprintf("rtr: %s: %s", e.Code, e.Text) }

// Unwrap gives ErrMalformed or ErrTooLong where they apply.
func (e *ProtocolError) Unwrap() error { return e.err }

// PDU is one protocol data unit. Which fields are meaningful depends on
// Type: Session for Serial Notify, Serial Query, Cache Response and End of
// Data; Serial for Serial Notify, Serial Query and End of Data; the timers
// for End of Data in version 1; Flags, Prefix, MaxLen and ASN for the
// prefix PDUs; Code, Encapsulated and Text for an Error Report.
type PDU struct {
	Version uint8
	Type    uint8
	Session uint16
	Serial  uint32

	Refresh, Retry, Expire uint32

	Announce bool
	Prefix   netip.Prefix
	MaxLen   uint8
	ASN      uint32

	Code         ErrorCode
	Encapsulated []byte
	Text         string
}

// Length is the PDU's encoded length.
func (p *PDU) Length() int {
	switch p.Type {
	case TypeSerialNotify, TypeSerialQuery:
		return 12
	case TypeResetQuery, TypeCacheResponse, TypeCacheReset:
		return 8
	case TypeIPv4Prefix:
		return 20
	case TypeIPv6Prefix:
		return 32
	case TypeEndOfData:
		if p.Version == Version0 {
			return 12
		}
		return 24
	case TypeErrorReport:
		return headerLen + 4 + len(p.Encapsulated) + 4 + len(p.Text)
	}
	return headerLen
}

// Append appends the PDU's encoding to b. The PDU must be well formed
// (the cache makes only such); Append does not check it.
func (p *PDU) Append(b []byte) []byte {
	second := p.Session
	switch p.Type {
	case TypeResetQuery, TypeCacheReset, TypeIPv4Prefix, TypeIPv6Prefix:
		second = 0
	case TypeErrorReport:
		second = uint16(p.Code)
	}
	b = append(b, p.Version, p.Type)
	b = binary.BigEndian.AppendUint16(b, second)
	b = binary.BigEndian.AppendUint32(b, uint32(p.Length()))
	switch p.Type {
	case TypeSerialNotify, TypeSerialQuery:
		b = binary.BigEndian.AppendUint32(b, p.Serial)
	case TypeIPv4Prefix, TypeIPv6Prefix:
		var flags byte
		if p.Announce {
			flags = 1
		}
		b = append(b, flags, byte(p.Prefix.Bits()), p.MaxLen, 0)
		if a := p.Prefix.Addr(); a.Is4() {
			a4 := a.As4()
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, a16[:]...)
		}
		b = binary.BigEndian.AppendUint32(b, p.ASN)
	case TypeEndOfData:
		b = binary.BigEndian.AppendUint32(b, p.Serial)
		if p.Version != Version0 {
			b = binary.BigEndian.AppendUint32(b, p.Refresh)
			b = binary.BigEndian.AppendUint32(b, p.Retry)
			b = binary.BigEndian.AppendUint32(b, p.Expire)
		}
	case TypeErrorReport:
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.Encapsulated)))
		b = append(b, p.Encapsulated...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.Text)))
		b = append(b, p.Text...)
	}
	return b
}

// String is a one-line description for traces and logs.
func (p *PDU) String() string {
	v := fmt.Sprintf("v%d ", p.Version)
	switch p.Type {
	case TypeSerialNotify:
		return v + fmt.Sprintf("serial-notify session=%d serial=%d", p.Session, p.Serial)
	case TypeSerialQuery:
		return v + fmt.Sprintf("serial-query session=%d serial=%d", p.Session, p.Serial)
	case TypeResetQuery:
		return v + "reset-query"
	case TypeCacheResponse:
		return v + fmt.Sprintf("cache-response session=%d", p.Session)
	case TypeIPv4Prefix, TypeIPv6Prefix:
		op := "withdraw"
		if p.Announce {
			op = "announce"
		}
		return v + fmt.Sprintf("%s %s-%d AS%d", op, p.Prefix, p.MaxLen, p.ASN)
	case TypeEndOfData:
		if p.Version == Version0 {
			return v + fmt.Sprintf("end-of-data session=%d serial=%d", p.Session, p.Serial)
		}
		return v + fmt.Sprintf("end-of-data session=%d serial=%d refresh=%d retry=%d expire=%d", p.Session, p.Serial, p.Refresh, p.Retry, p.Expire)
	case TypeCacheReset:
		return v + "cache-reset"
	case TypeErrorReport:
		return v + fmt.Sprintf("error-report %s %q", p.Code, p.Text)
	}
	return v + fmt.Sprintf("type-%d", p.Type)
}

func malformed(code ErrorCode, pdu []byte, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, PDU: pdu, Text: fmt.Sprintf(format, args...), err: ErrMalformed}
}

// Decode decodes one whole PDU (its length field must equal len(b)). It
// checks every field a cache or a router relies on; an error is a
// *ProtocolError with the code to answer. An unknown version or type is
// an error of its own code (Unsupported Protocol Version, Unsupported PDU
// Type), so that the caller can answer it as RFC 8210 section 7 says.
func Decode(b []byte) (PDU, error) {
	var p PDU
	if len(b) < headerLen {
		return p, malformed(CodeCorruptData, b, "%d bytes, shorter than a PDU header", len(b))
	}
	p.Version, p.Type = b[0], b[1]
	second := binary.BigEndian.Uint16(b[2:4])
	n := binary.BigEndian.Uint32(b[4:8])
	if int64(n) != int64(len(b)) {
		return p, malformed(CodeCorruptData, b, "length field %d, PDU of %d bytes", n, len(b))
	}
	if p.Version > MaxVersion {
		return p, &ProtocolError{Code: CodeUnsupportedVersion, PDU: b, Text: fmt.Sprintf("version %d; this cache speaks 0 and 1", p.Version)}
	}
	want := -1
	switch p.Type {
	case TypeSerialNotify, TypeSerialQuery:
		want = 12
	case TypeResetQuery, TypeCacheResponse, TypeCacheReset:
		want = 8
	case TypeIPv4Prefix:
		want = 20
	case TypeIPv6Prefix:
		want = 32
	case TypeEndOfData:
		want = 24
		if p.Version == Version0 {
			want = 12
		}
	case TypeErrorReport:
	case TypeRouterKey:
		if p.Version == Version0 {
			return p, &ProtocolError{Code: CodeUnsupportedPDUType, PDU: b, Text: "router key PDU in version 0"}
		}
		return p, &ProtocolError{Code: CodeUnsupportedPDUType, PDU: b, Text: "router key PDUs are not served by this cache"}
	default:
		return p, &ProtocolError{Code: CodeUnsupportedPDUType, PDU: b, Text: fmt.Sprintf("PDU type %d", p.Type)}
	}
	if want >= 0 && len(b) != want {
		return p, malformed(CodeCorruptData, b, "%s PDU of %d bytes, want %d", typeName(p.Type), len(b), want)
	}
	switch p.Type {
	case TypeSerialNotify, TypeSerialQuery:
		p.Session, p.Serial = second, binary.BigEndian.Uint32(b[8:12])
	case TypeCacheResponse:
		p.Session = second
	case TypeResetQuery, TypeCacheReset:
		if second != 0 {
			return p, malformed(CodeCorruptData, b, "%s PDU with %d in its zero field", typeName(p.Type), second)
		}
	case TypeIPv4Prefix, TypeIPv6Prefix:
		if second != 0 || b[11] != 0 {
			return p, malformed(CodeCorruptData, b, "prefix PDU with nonzero reserved fields")
		}
		if b[8]&^1 != 0 {
			return p, malformed(CodeCorruptData, b, "prefix PDU flags %#02x", b[8])
		}
		p.Announce = b[8]&1 == 1
		var addr netip.Addr
		if p.Type == TypeIPv4Prefix {
			addr = netip.AddrFrom4([4]byte(b[12:16]))
		} else {
			addr = netip.AddrFrom16([16]byte(b[12:28]))
		}
		plen, maxLen := int(b[9]), int(b[10])
		if plen > addr.BitLen() || maxLen > addr.BitLen() || maxLen < plen {
			return p, malformed(CodeCorruptData, b, "prefix length %d, max length %d for a %d-bit address", plen, maxLen, addr.BitLen())
		}
		pfx := netip.PrefixFrom(addr, plen)
		if pfx.Masked() != pfx {
			return p, malformed(CodeCorruptData, b, "prefix %s has host bits set", pfx)
		}
		p.Prefix, p.MaxLen = pfx, uint8(maxLen)
		p.ASN = binary.BigEndian.Uint32(b[len(b)-4:])
	case TypeEndOfData:
		p.Session, p.Serial = second, binary.BigEndian.Uint32(b[8:12])
		if p.Version != Version0 {
			p.Refresh, p.Retry, p.Expire = binary.BigEndian.Uint32(b[12:16]), binary.BigEndian.Uint32(b[16:20]), binary.BigEndian.Uint32(b[20:24])
		}
	case TypeErrorReport:
		p.Code = ErrorCode(second)
		rest := b[headerLen:]
		if len(rest) < 4 {
			return p, malformed(CodeCorruptData, b, "error report without its PDU length")
		}
		el := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(el) > uint64(len(rest)) {
			return p, malformed(CodeCorruptData, b, "error report PDU length %d past the end", el)
		}
		p.Encapsulated, rest = append([]byte(nil), rest[:el]...), rest[el:]
		if len(rest) < 4 {
			return p, malformed(CodeCorruptData, b, "error report without its text length")
		}
		tl := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(tl) != uint64(len(rest)) {
			return p, malformed(CodeCorruptData, b, "error report text length %d, %d bytes left", tl, len(rest))
		}
		p.Text = string(rest)
	}
	return p, nil
}

func typeName(t uint8) string {
	switch t {
	case TypeSerialNotify:
		return "serial notify"
	case TypeSerialQuery:
		return "serial query"
	case TypeResetQuery:
		return "reset query"
	case TypeCacheResponse:
		return "cache response"
	case TypeIPv4Prefix:
		return "IPv4 prefix"
	case TypeIPv6Prefix:
		return "IPv6 prefix"
	case TypeEndOfData:
		return "end of data"
	case TypeCacheReset:
		return "cache reset"
	case TypeRouterKey:
		return "router key"
	case TypeErrorReport:
		return "error report"
	}
	return fmt.Sprintf("type %d", t)
}

// Reader reads PDUs from a stream, refusing any longer than its limit
// before reading the body.
type Reader struct {
	r   io.Reader
	max int
	buf []byte
	// Started, when set, is called once the first byte of a PDU has
	// arrived: a server moves from its idle deadline to the shorter one
	// a PDU's rest must arrive within.
	Started func()
}

// NewReader reads from r with PDUs of at most max bytes (0:
// DefaultMaxPDU).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxPDU
	}
	return &Reader{r: r, max: max}
}

// ReadRaw reads one PDU's bytes (valid until the next call). A length
// field below the header size or above the limit is a *ProtocolError
// (CodeCorruptData) carrying the header; io errors are returned as they
// are (io.EOF at a clean end between PDUs).
func (r *Reader) ReadRaw() ([]byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r.r, h[:1]); err != nil {
		return nil, err
	}
	if r.Started != nil {
		r.Started()
	}
	return r.readRest(h)
}

func (r *Reader) readRest(h [headerLen]byte) ([]byte, error) {
	if _, err := io.ReadFull(r.r, h[1:]); err != nil {
		return nil, noEOF(err)
	}
	n := binary.BigEndian.Uint32(h[4:8])
	if n < headerLen {
		return nil, malformed(CodeCorruptData, h[:], "length field %d, below the header's 8 bytes", n)
	}
	if uint64(n) > uint64(r.max) {
		return nil, &ProtocolError{Code: CodeCorruptData, PDU: append([]byte(nil), h[:]...),
			Text: fmt.Sprintf("PDU of %d bytes, limit %d", n, r.max), err: ErrTooLong}
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	copy(b, h[:])
	if _, err := io.ReadFull(r.r, b[headerLen:]); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// Read reads and decodes one PDU.
func (r *Reader) Read() (PDU, error) {
	b, err := r.ReadRaw()
	if err != nil {
		return PDU{}, err
	}
	return Decode(b)
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
