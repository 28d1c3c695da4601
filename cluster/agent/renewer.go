package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// Errors that end a Renewer's Run.
var (
	// ErrRevoked: the root servers refuse to renew because the node is
	// revoked. Only a new registration under a new node id helps.
	ErrRevoked = errors.New("agent: node is revoked")
	// ErrRenewRefused: the root servers refuse to renew (HTTP 403) for
	// another reason, such as a certificate that is no longer the node's
	// current one. Retrying does not help.
	ErrRenewRefused = errors.New("agent: renewal refused")
	// ErrExpired: the certificate expired before a renewal succeeded; it
	// can no longer authenticate a renewal.
	ErrExpired = errors.New("agent: node certificate expired before it could be renewed")
)

// RenewerConfig configures a Renewer. Zero fields take the defaults.
type RenewerConfig struct {
	// DataDir is the node's data directory (required); its node.pem is the
	// certificate kept renewed.
	DataDir string
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// After returns a channel that receives once d has passed; nil means
	// time.After. Tests drive the Renewer with a fake.
	After func(d time.Duration) <-chan time.Time
	// Logger receives structured logs (serials and times, never keys); nil
	// discards them.
	Logger hclog.Logger
	// Renew replaces the certificate in dir and returns the new leaf; nil
	// means Renew.
	Renew func(ctx context.Context, dir string) (*x509.Certificate, error)
	// MinBackoff is the wait after the first failed renewal; it doubles
	// after each further failure, up to MaxBackoff. Defaults 1s and 5m.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxWait bounds one wait, so that a wall clock that jumps (a suspended
	// machine, a stepped clock) is noticed within it. Default 1m.
	MaxWait time.Duration
}

func (c RenewerConfig) withDefaults() RenewerConfig {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Renew == nil {
		c.Renew = Renew
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.MaxWait == 0 {
		c.MaxWait = time.Minute
	}
	return c
}

func (c RenewerConfig) validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("agent: renewer needs the node's data directory")
	case c.MinBackoff < 0, c.MaxBackoff < 0, c.MaxWait < 0:
		return fmt.Errorf("agent: renewer durations must not be negative (backoff %s..%s, max wait %s)", c.MinBackoff, c.MaxBackoff, c.MaxWait)
	case c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("agent: renewer backoff starts at %s, above its cap %s", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Renewer keeps a node's certificate renewed: it renews at RenewAt (two
// thirds of the lifetime) and, after a failure, retries with capped
// exponential backoff until the certificate expires.
type Renewer struct {
	cfg RenewerConfig
}

// NewRenewer checks cfg and makes a Renewer.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Renewer{cfg: cfg}, nil
}

// Current reads the node's current certificate (the leaf of node.pem).
func (r *Renewer) Current() (*x509.Certificate, error) {
	certs, err := ca.ReadCertsFile(CertPath(r.cfg.DataDir))
	if err == nil {
		return certs[0], nil
	}
	if _, serr := readState(r.cfg.DataDir); serr != nil {
		return nil, serr
	}
	return nil, fmt.Errorf("agent: %s holds no certificate yet; collect it with `keymesh node join --resume --data-dir %s`: %w",
		r.cfg.DataDir, r.cfg.DataDir, err)
}

// Run renews the certificate until ctx is done (then it returns nil) or
// renewal becomes impossible: the node is revoked (ErrRevoked), refused for
// another reason (ErrRenewRefused), or its certificate expired (ErrExpired).
func (r *Renewer) Run(ctx context.Context) error {
	cert, err := r.Current()
	if err != nil {
		return err
	}
	log := r.cfg.Logger
	if id, err := ca.IdentityOf(cert); err == nil {
		log = log.With("node", id.Name)
	}
	next := RenewAt(cert)
	log.Info("keeping the node certificate renewed", "serial", fsm.FormatSerial(cert.SerialNumber),
		"not_after", stamp(cert.NotAfter), "renew_at", stamp(next))
	backoff := time.Duration(0)
	failures := 0
	for {
		now := r.cfg.Clock()
		if now.Before(next) {
			select {
			case <-ctx.Done():
				return nil
			case <-r.cfg.After(min(next.Sub(now), r.cfg.MaxWait)):
			}
			continue
		}
		renewed, err := r.cfg.Renew(ctx, r.cfg.DataDir)
		if ctx.Err() != nil {
			return nil
		}
		now = r.cfg.Clock()
		if err == nil {
			cert, backoff, failures = renewed, 0, 0
			next = RenewAt(cert)
			if !next.After(now) {
				// A certificate already due (a skewed clock): do not spin.
				next = now.Add(r.cfg.MinBackoff)
			}
			log.Info("renewed the node certificate", "serial", fsm.FormatSerial(cert.SerialNumber),
				"not_after", stamp(cert.NotAfter), "renew_at", stamp(next))
			continue
		}
		if err := permanent(err); err != nil {
			log.Error("renewal refused; stopping", "serial", fsm.FormatSerial(cert.SerialNumber), "error", err)
			return err
		}
		if !now.Before(cert.NotAfter) {
			log.Error("node certificate expired before it could be renewed", "serial", fsm.FormatSerial(cert.SerialNumber),
				"not_after", stamp(cert.NotAfter), "error", err)
			return fmt.Errorf("%w (at %s): %w", ErrExpired, stamp(cert.NotAfter), err)
		}
		failures++
		backoff = min(max(2*backoff, r.cfg.MinBackoff), r.cfg.MaxBackoff)
		next = now.Add(backoff)
		log.Warn("renewal failed; retrying", "serial", fsm.FormatSerial(cert.SerialNumber), "failures", failures,
			"retry_in", backoff.String(), "not_after", stamp(cert.NotAfter), "error", err)
	}
}

// stamp formats a time for logs and errors: UTC, whole seconds.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// permanent returns the error that ends Run when err is a refusal that a
// retry cannot change, and nil otherwise.
func permanent(err error) error {
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		return nil
	}
	if errors.Is(err, api.ErrRevoked) {
		return fmt.Errorf("%w: %w", ErrRevoked, err)
	}
	return fmt.Errorf("%w: %w", ErrRenewRefused, err)
}
