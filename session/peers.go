package session

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity"
)

// A peer is written NODEID@HOST:PORT[,role=ROLE][,psk=FILE][,OPTION=VALUE...],
// on the command line (--peer) and in a peers file (--peers), one a line:
//
//	# whom edge-1 dials
//	core-1@10.0.0.11:1790,role=provider
//	core-2@10.0.0.12:1790,role=provider,psk=/etc/keymesh/core-2.key
//	edge-2@edge-2.mainnet.example.net:1790
//	audit-1,role=customer          # takes its sessions, does not dial it
//
// ROLE is what the peer is to this node: internal (the default), peer,
// provider or customer. FILE holds a pre-shared key (hex, mode 0600); a
// relative path is relative to the peers file. A line may end in a
// comment; blank lines are skipped. The address may be left out (NODEID
// alone, with options) for a peer whose sessions this node takes without
// dialling it.
//
// The routing options of the session: max-prefix=N (the routes the peer
// may bring, default 1000; past it the session ends and stays down for
// hold-down=DURATION, default 5m), notfound=accept|reject (whether routes
// no authorization covers are taken; invalid ones never are), and
// lock=PREFIX (repeatable as lock=P1+P2: routes for PREFIX are taken from
// this peer only).

// peerOptions names the options in errors.
const peerOptions = "role=ROLE, psk=FILE, max-prefix=N, hold-down=D, notfound=accept|reject, lock=PREFIX[+PREFIX]"

// MaxPrefixLimit bounds max-prefix.
const MaxPrefixLimit = 10_000_000

// ErrPeerSpec: a peer specification that does not parse.
var ErrPeerSpec = errors.New("session: bad peer")

// ValidatePeerID checks a configured peer's id: a node id names a node of
// this node's network; a node of a federated network is named by its
// SPIFFE ID (spiffe://NETWORK/node/ID), so that a node of another
// network never passes for one of this network that has its id.
func ValidatePeerID(id string) error {
	if strings.HasPrefix(id, "spiffe://") {
		sid, err := identity.ParseSPIFFEID(id)
		if err != nil {
			return err
		}
		if sid.Kind != identity.KindNode {
			return fmt.Errorf("%s is not a node's SPIFFE ID", id)
		}
		return nil
	}
	return ca.ValidateNodeID(id)
}

// MaxPeers bounds the peers of one node's configuration.
const MaxPeers = 4096

// ParsePeer parses one peer specification; base is the directory a
// relative psk= path is relative to.
func ParsePeer(spec, base string) (PeerConfig, error) {
	parts := strings.Split(strings.TrimSpace(spec), ",")
	head := parts[0]
	var pc PeerConfig
	id, addr, hasAddr := strings.Cut(head, "@")
	pc.ID = id
	if err := ValidatePeerID(id); err != nil {
		return pc, fmt.Errorf("%w %q: the node id: %v", ErrPeerSpec, spec, err)
	}
	if hasAddr {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return pc, fmt.Errorf("%w %q: %q is not HOST:PORT", ErrPeerSpec, spec, addr)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return pc, fmt.Errorf("%w %q: port %q is not 1 to 65535", ErrPeerSpec, spec, port)
		}
		pc.Addr = addr
	}
	seen := map[string]bool{}
	for _, opt := range parts[1:] {
		k, v, ok := strings.Cut(opt, "=")
		if !ok || v == "" {
			return pc, fmt.Errorf("%w %q: option %q is not KEY=VALUE (%s)", ErrPeerSpec, spec, opt, peerOptions)
		}
		if seen[k] {
			return pc, fmt.Errorf("%w %q: %s given twice", ErrPeerSpec, spec, k)
		}
		seen[k] = true
		switch k {
		case "role":
			r, err := ParseRole(v)
			if err != nil {
				return pc, fmt.Errorf("%w %q: %v", ErrPeerSpec, spec, err)
			}
			pc.Role = r
		case "psk":
			if !filepath.IsAbs(v) && base != "" {
				v = filepath.Join(base, v)
			}
			k, err := LoadPSK(v)
			if err != nil {
				return pc, fmt.Errorf("%w %q: %w", ErrPeerSpec, spec, err)
			}
			pc.PSK = k
		case "max-prefix":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxPrefixLimit {
				return pc, fmt.Errorf("%w %q: max-prefix %q is not 1 to %d", ErrPeerSpec, spec, v, MaxPrefixLimit)
			}
			pc.MaxPrefix = n
		case "hold-down":
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return pc, fmt.Errorf("%w %q: hold-down %q is not a duration of 1s or more", ErrPeerSpec, spec, v)
			}
			pc.HoldDown = d
		case "notfound":
			switch v {
			case "accept":
			case "reject":
				pc.RejectNotFound = true
			default:
				return pc, fmt.Errorf("%w %q: notfound is accept or reject, not %q", ErrPeerSpec, spec, v)
			}
		case "lock":
			for _, p := range strings.Split(v, "+") {
				pfx, err := netip.ParsePrefix(p)
				if err != nil || pfx.Masked() != pfx {
					return pc, fmt.Errorf("%w %q: lock %q is not a prefix such as 10.1.0.0/16", ErrPeerSpec, spec, p)
				}
				pc.Locks = append(pc.Locks, pfx)
			}
		default:
			return pc, fmt.Errorf("%w %q: unknown option %q (%s)", ErrPeerSpec, spec, k, peerOptions)
		}
	}
	return pc, nil
}

// ParsePeersFile reads a peers file; name is how errors name it (its
// path), and relative psk= paths are relative to its directory. An error
// names the line.
func ParsePeersFile(r io.Reader, name string) ([]PeerConfig, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 4<<20))
	sc.Buffer(make([]byte, 4096), 64<<10)
	var out []PeerConfig
	seen := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("%s:%d: %w %q: no spaces inside a peer (NODEID@HOST:PORT[,role=ROLE][,psk=FILE])", name, n, ErrPeerSpec, line)
		}
		pc, err := ParsePeer(line, filepath.Dir(name))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if first, ok := seen[pc.ID]; ok {
			return nil, fmt.Errorf("%s:%d: %w: %s is on line %d already", name, n, ErrPeerSpec, pc.ID, first)
		}
		seen[pc.ID] = n
		if len(out) == MaxPeers {
			return nil, fmt.Errorf("%s:%d: %w: more than %d peers", name, n, ErrPeerSpec, MaxPeers)
		}
		out = append(out, pc)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}
