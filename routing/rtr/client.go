package rtr

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Dump is what a cache answered a Reset Query with.
type Dump struct {
	Version uint8
	Session uint16
	Serial  uint32
	Timers  Timers // version 1 only
	VRPs    []VRP
}

// ErrReport is a cache's Error Report as an error: errors.As gives the
// *ReportError with its code.
var ErrReport = errors.New("rtr: the cache sent an error report")

// ReportError is an Error Report a cache sent.
type ReportError struct {
	Code ErrorCode
	Text string
	// Version is the report's version: for Unsupported Protocol
	// Version, the highest the cache speaks.
	Version uint8
}

func (e *ReportError) Error() string {
	return fmt.Sprintf("rtr: the cache answered %s: %s", e.Code, e.Text)
}

// Unwrap gives ErrReport.
func (e *ReportError) Unwrap() error { return ErrReport }

// Fetch asks the cache at addr for everything (a Reset Query in version)
// and reads the answer to its End of Data, within ctx. A cache of a
// lower version is asked again in its version, as a router does (RFC
// 8210 section 7). The answer holds at most maxVRPs (0: 10,000,000).
func Fetch(ctx context.Context, addr string, version uint8, maxVRPs int) (Dump, error) {
	if maxVRPs <= 0 {
		maxVRPs = 10_000_000
	}
	d, err := fetch(ctx, addr, version, maxVRPs)
	var re *ReportError
	if errors.As(err, &re) && re.Code == CodeUnsupportedVersion && re.Version < version {
		return fetch(ctx, addr, re.Version, maxVRPs)
	}
	return d, err
}

func fetch(ctx context.Context, addr string, version uint8, maxVRPs int) (Dump, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Dump{}, err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	} else {
		c.SetDeadline(time.Now().Add(time.Minute))
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	q := PDU{Version: version, Type: TypeResetQuery}
	if _, err := c.Write(q.Append(nil)); err != nil {
		return Dump{}, err
	}
	r := NewReader(bufio.NewReader(c), DefaultMaxPDU)
	d := Dump{Version: version}
	started := false
	for {
		p, err := r.Read()
		if err != nil {
			if ctx.Err() != nil {
				return d, ctx.Err()
			}
			return d, fmt.Errorf("rtr: reading the answer of %s: %w", addr, err)
		}
		switch p.Type {
		case TypeErrorReport:
			return d, &ReportError{Code: p.Code, Text: p.Text, Version: p.Version}
		case TypeSerialNotify:
			continue // a change during the answer: the next query gets it
		}
		if p.Version != version {
			return d, fmt.Errorf("%w: a version %d PDU in a version %d session", ErrMalformed, p.Version, version)
		}
		switch p.Type {
		case TypeCacheResponse:
			started, d.Session = true, p.Session
		case TypeIPv4Prefix, TypeIPv6Prefix:
			if !started {
				return d, fmt.Errorf("%w: a prefix before the cache response", ErrMalformed)
			}
			if !p.Announce {
				return d, fmt.Errorf("%w: a withdrawal in a full answer", ErrMalformed)
			}
			if len(d.VRPs) >= maxVRPs {
				return d, fmt.Errorf("rtr: the answer of %s holds more than %d VRPs", addr, maxVRPs)
			}
			d.VRPs = append(d.VRPs, VRP{Prefix: p.Prefix, MaxLen: p.MaxLen, ASN: p.ASN})
		case TypeEndOfData:
			if !started || p.Session != d.Session {
				return d, fmt.Errorf("%w: end of data of session %d in session %d", ErrMalformed, p.Session, d.Session)
			}
			d.Serial, d.Timers = p.Serial, Timers{Refresh: p.Refresh, Retry: p.Retry, Expire: p.Expire}
			return d, nil
		default:
			return d, fmt.Errorf("%w: %s in an answer to a reset query", ErrMalformed, typeName(p.Type))
		}
	}
}
