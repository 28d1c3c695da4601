package rtr

import (
	"errors"
	"fmt"
)

// Timers are the End of Data timers a version 1 router is told (RFC 8210
// section 6), in seconds.
type Timers struct {
	Refresh, Retry, Expire uint32
}

// DefaultTimers are RFC 8210's defaults. A router polls at Refresh; the
// cache's Serial Notify tells it of a change at once, so the poll is only
// a safety net.
var DefaultTimers = Timers{Refresh: 3600, Retry: 600, Expire: 7200}

// ErrTimers: timers outside RFC 8210's ranges.
var ErrTimers = errors.New("rtr: timers outside RFC 8210's ranges")

// Check says whether the timers are within RFC 8210's ranges (refresh
// 1..86400, retry 1..7200, expire 600..172800 and above both others).
func (t Timers) Check() error {
	if t.Refresh < 1 || t.Refresh > 86400 || t.Retry < 1 || t.Retry > 7200 ||
		t.Expire < 600 || t.Expire > 172800 || t.Expire <= t.Refresh || t.Expire <= t.Retry {
		return fmt.Errorf("%w: refresh %d (1..86400), retry %d (1..7200), expire %d (600..172800, above both)", ErrTimers, t.Refresh, t.Retry, t.Expire)
	}
	return nil
}

// machine is the cache's side of one router session, without I/O: it
// takes the router's PDUs and the cache's changes and appends what to
// send. The version is negotiated by the router's first PDU (RFC 8210
// section 7): 0 or 1 is spoken from then on; a higher one is answered
// with Unsupported Protocol Version in version 1, and the session ends.
type machine struct {
	cache   *Cache
	timers  Timers
	version int    // -1 until the first query
	told    uint64 // the serial last sent in an End of Data or Serial Notify
	toldSet bool
}

func newMachine(c *Cache, t Timers) *machine { return &machine{cache: c, timers: t, version: -1} }

// result of one step: bytes to send, whether to close after sending
// them, and the Error Report code sent (for the metrics), if any.
type result struct {
	out   []byte
	bulk  []byte // shared bytes sent after out (a full answer's prefixes)
	tail  []byte // sent after bulk
	close bool
	code  *ErrorCode
	query string // "reset", "serial", "serial-reset" (answered with Cache Reset) or ""
}

func (m *machine) errorReport(r *result, version uint8, code ErrorCode, pdu []byte, text string) {
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	if len(pdu) > DefaultMaxPDU/2 {
		pdu = pdu[:headerLen]
	}
	p := PDU{Version: version, Type: TypeErrorReport, Code: code, Encapsulated: pdu, Text: text}
	r.out = p.Append(r.out)
	r.code = &code
	r.close = code.Fatal()
}

// replyVersion is the version to answer a refused PDU in.
func (m *machine) replyVersion(raw []byte) uint8 {
	if m.version >= 0 {
		return uint8(m.version)
	}
	if len(raw) > 0 && raw[0] <= MaxVersion {
		return raw[0]
	}
	return MaxVersion
}

// receive handles one PDU the router sent, as raw bytes (a PDU's length
// already checked by the Reader), or the Reader's refusal of one.
func (m *machine) receive(raw []byte, readErr error) result {
	var r result
	var pe *ProtocolError
	if readErr != nil {
		if errors.As(readErr, &pe) {
			if len(pe.PDU) > 1 && pe.PDU[1] == TypeErrorReport {
				// never answer an Error Report with one, even one refused
				// from its header (RFC 8210 section 12)
				r.close = true
				return r
			}
			m.errorReport(&r, m.replyVersion(pe.PDU), pe.Code, pe.PDU, pe.Text)
		} else {
			r.close = true
		}
		return r
	}
	p, err := Decode(raw)
	if err != nil {
		if !errors.As(err, &pe) {
			m.errorReport(&r, m.replyVersion(raw), CodeInternalError, raw, err.Error())
			return r
		}
		if len(raw) > 1 && raw[1] == TypeErrorReport {
			// never answer an Error Report with one (RFC 8210 section 12)
			r.close = true
			return r
		}
		v := m.replyVersion(raw)
		if pe.Code == CodeUnsupportedVersion {
			v = MaxVersion
			if m.version >= 0 {
				pe.Code, pe.Text = m.unexpectedVersion(), fmt.Sprintf("version %d in a version %d session", raw[0], m.version)
				v = uint8(m.version)
			}
		}
		m.errorReport(&r, v, pe.Code, pe.PDU, pe.Text)
		return r
	}
	if m.version >= 0 && int(p.Version) != m.version {
		if p.Type == TypeErrorReport {
			r.close = true
			return r
		}
		m.errorReport(&r, uint8(m.version), m.unexpectedVersion(), raw, fmt.Sprintf("version %d in a version %d session", p.Version, m.version))
		return r
	}
	switch p.Type {
	case TypeResetQuery:
		m.version = int(p.Version)
		r.query = "reset"
		m.full(&r)
	case TypeSerialQuery:
		m.version = int(p.Version)
		r.query = "serial"
		m.serial(&r, p)
	case TypeErrorReport:
		// the router gives up on this session
		r.close = p.Code.Fatal()
	default:
		m.errorReport(&r, p.Version, CodeInvalidRequest, raw, fmt.Sprintf("a router does not send %s PDUs", typeName(p.Type)))
	}
	return r
}

func (m *machine) v() uint8 { return uint8(m.version) }

// unexpectedVersion is the code for a PDU of another version inside a
// session: Unexpected Protocol Version (8) in version 1; RFC 6810 has no
// such code, so Unsupported Protocol Version (4) in version 0.
func (m *machine) unexpectedVersion() ErrorCode {
	if m.version == int(Version0) {
		return CodeUnsupportedVersion
	}
	return CodeUnexpectedVersion
}

func (m *machine) endOfData(b []byte, a answer) []byte {
	p := PDU{Version: m.v(), Type: TypeEndOfData, Session: a.session, Serial: uint32(a.serial),
		Refresh: m.timers.Refresh, Retry: m.timers.Retry, Expire: m.timers.Expire}
	m.told, m.toldSet = a.serial, true
	return p.Append(b)
}

// full answers a Reset Query: Cache Response, every VRP (the cache's
// shared encoding, not copied), End of Data.
func (m *machine) full(r *result) {
	enc, a := m.cache.encodedFull(m.v())
	if !a.ready {
		r.out = m.noData(r.out)
		return
	}
	cr := PDU{Version: m.v(), Type: TypeCacheResponse, Session: a.session}
	r.out = cr.Append(r.out)
	r.bulk = enc
	r.tail = m.endOfData(nil, a)
}

// bytes is everything the result sends, in one slice (for tests).
func (r *result) bytes() []byte {
	return append(append(append([]byte(nil), r.out...), r.bulk...), r.tail...)
}

func (m *machine) noData(b []byte) []byte {
	p := PDU{Version: m.v(), Type: TypeErrorReport, Code: CodeNoDataAvailable, Text: "the cache has no data yet; ask again"}
	return p.Append(b)
}

// serial answers a Serial Query: the delta if the history holds the
// router's serial, else Cache Reset (the router then asks for all).
func (m *machine) serial(r *result, p PDU) {
	start := len(r.out)
	r.out = append(r.out, make([]byte, 8)...)
	out, a := m.cache.appendDelta(r.out, m.v(), p.Session, p.Serial)
	switch {
	case !a.ready:
		r.out = m.noData(r.out[:start])
	case !a.found:
		r.query = "serial-reset"
		cr := PDU{Version: m.v(), Type: TypeCacheReset}
		r.out = cr.Append(r.out[:start])
	default:
		cr := PDU{Version: m.v(), Type: TypeCacheResponse, Session: a.session}
		cr.Append(out[start:start])
		r.out = m.endOfData(out, a)
	}
}

// changed is called when the cache moved: a Serial Notify for a router
// past its first query that has not been told this serial yet.
func (m *machine) changed(b []byte) []byte {
	ready, serial, _ := m.cache.State()
	if m.version < 0 || !ready || (m.toldSet && m.told == serial) {
		return b
	}
	m.told, m.toldSet = serial, true
	p := PDU{Version: m.v(), Type: TypeSerialNotify, Session: SessionID(m.cache.network, serial), Serial: uint32(serial)}
	return p.Append(b)
}
