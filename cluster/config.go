package cluster

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/routing/rtr"
)

// RaftTimeouts are the timing knobs of the consensus layer. The defaults suit a
// LAN: a loaded two-core machine sees no spurious elections (10 minutes of
// steady load without a leader change in `make chaos`), and a leader that
// froze or was cut off is replaced within two heartbeat timeouts. A leader
// whose process died is replaced sooner, without waiting for the timers
// (failover.go; `make chaos`: p50 160 ms, p99 483 and 656 ms over 50
// kills in two runs).
type RaftTimeouts struct {
	// Heartbeat is how long a follower waits without hearing from the leader
	// before it starts an election (hashicorp/raft draws it between one and
	// two times this). Default 200ms.
	Heartbeat time.Duration
	// Election is how long a candidate waits for votes before it retries.
	// Default 200ms.
	Election time.Duration
	// LeaderLease is how long a leader keeps leading without contact with a
	// quorum. Must not exceed Heartbeat. Default 200ms: equal to Heartbeat,
	// so that a new leader whose one live follower stalls briefly on a
	// loaded machine does not step down at once.
	LeaderLease time.Duration
	// Commit bounds how long the leader waits before it sends a heartbeat to
	// push a commit index. Default 20ms.
	Commit time.Duration
	// NoCrashElection keeps a follower waiting out the heartbeat timeout
	// even when it can tell that the leader's process is gone (its
	// connections closed and its Raft port refuses a new one). By default
	// the follower starts an election at once (failover.go).
	NoCrashElection bool
}

// DefaultRaftTimeouts returns the LAN defaults.
func DefaultRaftTimeouts() RaftTimeouts {
	return RaftTimeouts{
		Heartbeat:   200 * time.Millisecond,
		Election:    200 * time.Millisecond,
		LeaderLease: 200 * time.Millisecond,
		Commit:      20 * time.Millisecond,
	}
}

func (t RaftTimeouts) withDefaults() RaftTimeouts {
	d := DefaultRaftTimeouts()
	if t.Heartbeat == 0 {
		t.Heartbeat = d.Heartbeat
	}
	if t.Election == 0 {
		t.Election = d.Election
	}
	if t.LeaderLease == 0 {
		t.LeaderLease = min(d.LeaderLease, t.Heartbeat)
	}
	if t.Commit == 0 {
		t.Commit = d.Commit
	}
	return t
}

func (t RaftTimeouts) validate() error {
	const floor = 5 * time.Millisecond
	switch {
	case t.Heartbeat < floor, t.Election < floor, t.LeaderLease < floor, t.Commit < time.Millisecond:
		return fmt.Errorf("raft timeouts must be at least %s (commit at least 1ms): got heartbeat %s, election %s, lease %s, commit %s",
			floor, t.Heartbeat, t.Election, t.LeaderLease, t.Commit)
	case t.LeaderLease > t.Heartbeat:
		return fmt.Errorf("raft leader lease (%s) must not exceed the heartbeat timeout (%s)", t.LeaderLease, t.Heartbeat)
	}
	return nil
}

// Limits bound what a root server accepts from the network. Zero fields take
// the defaults.
type Limits struct {
	// MaxBodyBytes bounds a request body. Default 64 KiB.
	MaxBodyBytes int64
	// MaxHeaderBytes bounds request headers. Default 16 KiB.
	MaxHeaderBytes int
	// RequestTimeout bounds one API request, forwarding included. Default 10s.
	RequestTimeout time.Duration
	// MaxWait bounds the wait of a blocking query. Default 5m.
	MaxWait time.Duration
	// RegistrationRate is how many registration requests per second one
	// client address may make, with RegistrationBurst in a burst. Default
	// 20/s, burst 40. Fleets registering through one NAT raise it.
	RegistrationRate  float64
	RegistrationBurst int
	// SigningRate is how many certificates per second this server signs in
	// all (registrations, approvals, renewals), with SigningBurst in a
	// burst. Default 2000/s, burst 500.
	SigningRate  float64
	SigningBurst int
	// MaxSources bounds how many client addresses the per-source limiter
	// remembers. Default 10000.
	MaxSources int
	// MaxPendingRegistrations bounds the registrations waiting for an
	// operator in the whole cluster (the state machine counts them), and
	// MaxPendingPerSource those from one client address. Defaults 1000
	// and 20.
	MaxPendingRegistrations int
	MaxPendingPerSource     int
	// MaxBlockingQueries bounds the blocking trust queries waiting on this
	// server, MaxBlockingPerClient those of one caller (a follower asks
	// one at a time). Defaults 8192 and 4.
	MaxBlockingQueries   int
	MaxBlockingPerClient int
	// NodeCertValidity is the lifetime of node certificates. Default 24h.
	NodeCertValidity time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = 64 << 10
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = 10 * time.Second
	}
	if l.MaxWait == 0 {
		l.MaxWait = 5 * time.Minute
	}
	if l.RegistrationRate == 0 {
		l.RegistrationRate = 20
	}
	if l.RegistrationBurst == 0 {
		l.RegistrationBurst = 40
	}
	if l.SigningRate == 0 {
		l.SigningRate = 2000
	}
	if l.SigningBurst == 0 {
		l.SigningBurst = 500
	}
	if l.MaxSources == 0 {
		l.MaxSources = 10000
	}
	if l.MaxPendingRegistrations == 0 {
		l.MaxPendingRegistrations = 1000
	}
	if l.MaxPendingPerSource == 0 {
		l.MaxPendingPerSource = 20
	}
	if l.MaxBlockingQueries == 0 {
		l.MaxBlockingQueries = 8192
	}
	if l.MaxBlockingPerClient == 0 {
		l.MaxBlockingPerClient = 4
	}
	if l.NodeCertValidity == 0 {
		l.NodeCertValidity = 24 * time.Hour
	}
	return l
}

// Options are the runtime settings shared by Bootstrap, Join and Open. They
// are not stored in the data directory.
type Options struct {
	// Raft holds the consensus timeouts; zero fields take the LAN defaults.
	Raft RaftTimeouts
	// SnapshotThreshold is how many log entries trigger a snapshot. Default 8192.
	SnapshotThreshold uint64
	// SnapshotInterval is how often Raft checks whether to snapshot. Default 30s.
	SnapshotInterval time.Duration
	// SnapshotRetain is how many snapshots are kept on disk. Default 2.
	SnapshotRetain int
	// Limits bound the HTTP API.
	Limits Limits
	// Logger receives structured logs; nil means a logger on stderr at info level.
	Logger hclog.Logger
	// Clock returns the current time; nil means time.Now. It stamps commands
	// and signs certificates.
	Clock func() time.Time
	// PruneInterval is how often the leader drops revocations past their
	// prune-after time, spent or expired join tokens and JWKS keys past
	// their end of life. Default 1m.
	PruneInterval time.Duration
	// GossipKeyStep is how long each phase of a gossip key rotation
	// lasts: an installed key becomes primary after it, the retiring key
	// goes after another. Agents follow the keyring with blocking queries,
	// so a step covers a follower that was between two of them. Default 2s.
	GossipKeyStep time.Duration
	// FederationInterval is how often the leader fetches the published
	// JWKS of each federated network that has endpoints: a key its roots
	// revoke or drop is refused here at most this much later (plus the
	// trust sync). Default 2s.
	FederationInterval time.Duration
	// IssuerKeyType is the key type of a new server's issuing intermediate.
	// Default P-256: it signs node certificates (and crypto/x509 verifies
	// each signature it makes) about six times faster than P-384, which
	// makes a registration 1.6 times cheaper. The AS root is always P-384.
	IssuerKeyType ca.KeyType
	// RTRAddr, when set, is the host:port this server serves the
	// network's route authorizations on to routers, over RTR (RFC 8210,
	// and 6810 for version 0 routers): plain TCP, for loopback or a
	// trusted network. Port 0 picks one (Server.RTRAddr says which).
	RTRAddr string
	// RTR holds the RTR server's limits and timers; zero fields take
	// the defaults of package rtr.
	RTR RTROptions
}

// RTROptions are an RTR server's limits and End of Data timers.
type RTROptions struct {
	MaxRouters int
	Timers     rtr.Timers
}

func (o Options) withDefaults() Options {
	o.Raft = o.Raft.withDefaults()
	if o.SnapshotThreshold == 0 {
		o.SnapshotThreshold = 8192
	}
	if o.SnapshotInterval == 0 {
		o.SnapshotInterval = 30 * time.Second
	}
	if o.SnapshotRetain == 0 {
		o.SnapshotRetain = 2
	}
	o.Limits = o.Limits.withDefaults()
	if o.Logger == nil {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "keymesh", Level: hclog.Info})
	}
	if o.GossipKeyStep == 0 {
		o.GossipKeyStep = 2 * time.Second
	}
	if o.FederationInterval == 0 {
		o.FederationInterval = 2 * time.Second
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.PruneInterval == 0 {
		o.PruneInterval = time.Minute
	}
	if o.IssuerKeyType == "" {
		o.IssuerKeyType = ca.KeyP256
	}
	return o
}

func (o Options) validate() error {
	if err := o.Raft.validate(); err != nil {
		return err
	}
	l := o.Limits
	if l.RegistrationRate < 0 || l.RegistrationBurst < 1 || l.SigningRate < 0 || l.SigningBurst < 1 || l.MaxSources < 1 ||
		l.MaxPendingRegistrations < 1 || l.MaxPendingPerSource < 1 || l.MaxBlockingQueries < 1 || l.MaxBlockingPerClient < 1 {
		return errors.New("rate limits must be positive")
	}
	if l.NodeCertValidity < 10*time.Minute || l.NodeCertValidity > 90*24*time.Hour {
		return fmt.Errorf("node certificate validity %s is outside 10m..2160h", l.NodeCertValidity)
	}
	if o.IssuerKeyType != ca.KeyP256 && o.IssuerKeyType != ca.KeyP384 {
		return fmt.Errorf("issuer key type %q: use p256 or p384", o.IssuerKeyType)
	}
	if o.SnapshotRetain < 1 {
		return errors.New("snapshot retention must keep at least one snapshot")
	}
	if o.RTRAddr != "" {
		if err := validateAddr("--rtr-addr", o.RTRAddr); err != nil {
			return err
		}
	}
	if o.RTR.Timers != (rtr.Timers{}) {
		if err := o.RTR.Timers.Check(); err != nil {
			return err
		}
	}
	return nil
}

// validateAddr checks a host:port an operator gave for a listener. Port 0
// asks the system for a free port; the chosen one is what gets advertised and
// stored.
func validateAddr(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port (for example 127.0.0.1:8300): %w", flag, addr, err)
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return fmt.Errorf("%s %q must name the address other servers reach, not a wildcard", flag, addr)
	}
	if port == "" {
		return fmt.Errorf("%s %q has no port", flag, addr)
	}
	return nil
}

// validateAdvertise checks an optional Raft advertise address: a concrete
// host:port other servers can dial.
func validateAdvertise(addr string) error {
	if addr == "" {
		return nil
	}
	if err := validateAddr("--raft-advertise", addr); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		return fmt.Errorf("--raft-advertise %q needs a real port, not 0", addr)
	}
	return nil
}
