package session

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A frame is an 8-byte header and a body:
//
//	0      2         3        4        8
//	+------+---------+--------+--------+----------...
//	| 'K'M'| version |  type  | length |  body
//	+------+---------+--------+--------+----------...
//
// magic is the bytes 0x4B 0x4D ("KM"), version is FrameVersion, type a
// MsgType, length the body's length (big-endian uint32). A reader checks the
// header before it reads a byte of the body: the magic and the version, a
// known type, and a length within the frame limit (header included) and
// within what the type allows (KEEPALIVE has none). Every failure is a
// *FrameError naming the NOTIFICATION it answers.

// FrameVersion is the version of the framing and of the messages in it.
const FrameVersion = 1

// HeaderLen is the length of a frame header.
const HeaderLen = 8

// DefaultMaxFrame is the default largest frame, header included.
const DefaultMaxFrame = 64 << 10

// MinMaxFrame is the smallest frame limit a session may be configured with:
// an OPEN with its token must fit.
const MinMaxFrame = 4 << 10

var magic = [2]byte{0x4B, 0x4D}

// MsgType is a frame's message type (BGP's numbers).
type MsgType uint8

// Message types.
const (
	MsgOpen         MsgType = 1
	MsgUpdate       MsgType = 2
	MsgNotification MsgType = 3
	MsgKeepalive    MsgType = 4
	MsgRouteRefresh MsgType = 5
)

func (t MsgType) String() string {
	switch t {
	case MsgOpen:
		return "OPEN"
	case MsgUpdate:
		return "UPDATE"
	case MsgNotification:
		return "NOTIFICATION"
	case MsgKeepalive:
		return "KEEPALIVE"
	case MsgRouteRefresh:
		return "ROUTE-REFRESH"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

func (t MsgType) known() bool { return t >= MsgOpen && t <= MsgRouteRefresh }

// Framing errors. Each is wrapped in a *FrameError.
var (
	// ErrBadMagic: the frame does not start with the magic bytes (not our
	// protocol, or the stream lost its framing).
	ErrBadMagic = errors.New("session: frame does not start with the magic bytes")
	// ErrBadVersion: a frame version this speaker does not know.
	ErrBadVersion = errors.New("session: unknown frame version")
	// ErrBadType: an unknown message type.
	ErrBadType = errors.New("session: unknown message type")
	// ErrFrameTooLarge: the frame is over the limit.
	ErrFrameTooLarge = errors.New("session: frame over the size limit")
	// ErrBadLength: a length the type does not allow (a KEEPALIVE with a
	// body, an OPEN without one).
	ErrBadLength = errors.New("session: bad message length")
	// ErrTruncated: the stream ended inside a frame.
	ErrTruncated = errors.New("session: frame truncated")
)

// FrameError is a frame refused by the reader, with the NOTIFICATION that
// answers it.
type FrameError struct {
	Notification Notification
	Err          error
}

func (e *FrameError) Error() string { return e.Err.Error() }
func (e *FrameError) Unwrap() error { return e.Err }

func frameErr(sub uint8, sentinel error, format string, args ...any) *FrameError {
	return &FrameError{
		Notification: Notification{Code: CodeHeader, Subcode: sub, Reason: fmt.Sprintf(format, args...)},
		Err:          fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...),
	}
}

// Frame is one message as read: its type and body.
type Frame struct {
	Type MsgType
	Body []byte
}

// AppendFrame appends the frame of t with body to b.
func AppendFrame(b []byte, t MsgType, body []byte) []byte {
	var h [HeaderLen]byte
	h[0], h[1], h[2], h[3] = magic[0], magic[1], FrameVersion, byte(t)
	binary.BigEndian.PutUint32(h[4:], uint32(len(body)))
	return append(append(b, h[:]...), body...)
}

// CheckHeader checks a frame header against the limit max (header
// included) and returns the message type and body length.
func CheckHeader(h []byte, max int) (MsgType, int, error) {
	if len(h) < HeaderLen {
		return 0, 0, &FrameError{Notification: Notification{Code: CodeHeader, Subcode: SubBadLength, Reason: "truncated header"},
			Err: fmt.Errorf("%w: %d of %d header bytes", ErrTruncated, len(h), HeaderLen)}
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return 0, 0, frameErr(SubNotSynchronized, ErrBadMagic, "bytes %#02x %#02x", h[0], h[1])
	}
	if h[2] != FrameVersion {
		return 0, 0, frameErr(SubBadVersion, ErrBadVersion, "version %d, this speaker has %d", h[2], FrameVersion)
	}
	t := MsgType(h[3])
	if !t.known() {
		return 0, 0, frameErr(SubBadType, ErrBadType, "type %d", h[3])
	}
	n := binary.BigEndian.Uint32(h[4:])
	if uint64(n)+HeaderLen > uint64(max) {
		return 0, 0, frameErr(SubBadLength, ErrFrameTooLarge, "%s of %d bytes, limit %d", t, uint64(n)+HeaderLen, max)
	}
	switch {
	case t == MsgKeepalive && n != 0:
		return 0, 0, frameErr(SubBadLength, ErrBadLength, "KEEPALIVE with a %d-byte body", n)
	case t != MsgKeepalive && n == 0:
		return 0, 0, frameErr(SubBadLength, ErrBadLength, "%s without a body", t)
	}
	return t, int(n), nil
}

// FrameReader reads frames from a stream, checking each header before it
// reads the body.
type FrameReader struct {
	r   *bufio.Reader
	max int
	h   [HeaderLen]byte
}

// NewFrameReader reads frames of at most max bytes (header included) from
// r; max below MinMaxFrame takes DefaultMaxFrame.
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max < MinMaxFrame {
		max = DefaultMaxFrame
	}
	return &FrameReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// Read returns the next frame. io.EOF means the stream ended between
// frames; a *FrameError a frame refused (the stream cannot go on).
func (fr *FrameReader) Read() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, &FrameError{Notification: Notification{Code: CodeHeader, Subcode: SubBadLength, Reason: "truncated header"},
				Err: fmt.Errorf("%w: inside a header", ErrTruncated)}
		}
		return Frame{}, err
	}
	t, n, err := CheckHeader(fr.h[:], fr.max)
	if err != nil {
		return Frame{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(fr.r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, &FrameError{Notification: Notification{Code: CodeHeader, Subcode: SubBadLength, Reason: "truncated body"},
				Err: fmt.Errorf("%w: %s body of %d bytes", ErrTruncated, t, n)}
		}
		return Frame{}, err
	}
	return Frame{Type: t, Body: body}, nil
}
