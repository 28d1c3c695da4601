package rtr

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server limits' defaults.
const (
	// DefaultMaxRouters bounds the router connections served at once; one
	// more is closed at accept.
	DefaultMaxRouters = 64
	// DefaultPDUTimeout is how long the rest of a PDU may take once its
	// first byte has arrived.
	DefaultPDUTimeout = 10 * time.Second
	// DefaultFirstQueryTimeout is how long a new connection may stay
	// silent before its first query: a router asks at once, and silent
	// connections must not hold the slots of MaxRouters.
	DefaultFirstQueryTimeout = 30 * time.Second
	// DefaultWriteTimeout is how long one answer may take to be written
	// (a full answer to a router that stopped reading ends here).
	DefaultWriteTimeout = 30 * time.Second
)

// Config configures a Server. Zero fields take the defaults.
type Config struct {
	Cache  *Cache
	Logger hclog.Logger
	Timers Timers
	// MaxRouters bounds the connections served at once.
	MaxRouters int
	// IdleTimeout is how long a router may stay silent between PDUs; a
	// router polls at the Refresh timer at least, so the default is the
	// Expire timer (after which the router has dropped the data anyway).
	IdleTimeout time.Duration
	// FirstQueryTimeout bounds the silence before the first PDU.
	FirstQueryTimeout time.Duration
	PDUTimeout        time.Duration
	WriteTimeout      time.Duration
	// MaxPDU bounds a PDU read from a router (default DefaultMaxPDU).
	MaxPDU int
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Timers == (Timers{}) {
		c.Timers = DefaultTimers
	}
	if c.MaxRouters <= 0 {
		c.MaxRouters = DefaultMaxRouters
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Duration(c.Timers.Expire) * time.Second
	}
	if c.FirstQueryTimeout <= 0 {
		c.FirstQueryTimeout = DefaultFirstQueryTimeout
	}
	if c.PDUTimeout <= 0 {
		c.PDUTimeout = DefaultPDUTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxPDU <= 0 {
		c.MaxPDU = DefaultMaxPDU
	}
	return c
}

// Server serves a Cache to routers over plain TCP (RFC 8210 section 9:
// for loopback or a trusted network; TLS and SSH transports are not
// offered).
type Server struct {
	cfg Config
	log hclog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lns    []net.Listener
	closed bool
	wg     sync.WaitGroup

	m serverMetrics
}

// NewServer returns a server of cfg.Cache.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Cache == nil {
		return nil, errors.New("rtr: a server needs a cache")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Timers.Check(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}}, nil
}

// Cache is the cache the server serves.
func (s *Server) Cache() *Cache { return s.cfg.Cache }

// Serve accepts routers on l until Close or a listener error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return net.ErrClosed
	}
	s.lns = append(s.lns, l)
	s.mu.Unlock()
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: pause and go on, as
			// net/http does; the root must not stop for it.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("router connection not accepted; pausing", "error", err, "pause", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.cfg.MaxRouters {
			full := !s.closed
			s.mu.Unlock()
			if full {
				s.m.count(&s.m.refused)
				s.log.Warn("router connection refused: at the limit", "remote", c.RemoteAddr().String(), "max_routers", s.cfg.MaxRouters)
			}
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

// Close stops accepting, ends every router session and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.lns {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Run serves on l until ctx ends (a run.Group component's shape).
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		s.Close()
		<-errc
		return nil
	case err := <-errc:
		s.Close()
		return err
	}
}

// Routers returns how many routers are connected.
func (s *Server) Routers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	remote := c.RemoteAddr().String()
	log := s.log.With("router", remote)
	log.Debug("router connected")
	m := newMachine(s.cfg.Cache, s.cfg.Timers)

	type read struct {
		raw []byte
		err error
	}
	reads := make(chan read)
	next := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		br := bufio.NewReader(c)
		r := NewReader(br, s.cfg.MaxPDU)
		r.Started = func() { c.SetReadDeadline(time.Now().Add(s.cfg.PDUTimeout)) }
		idle := min(s.cfg.FirstQueryTimeout, s.cfg.IdleTimeout)
		for {
			c.SetReadDeadline(time.Now().Add(idle))
			idle = s.cfg.IdleTimeout
			raw, err := r.ReadRaw()
			select {
			case reads <- read{raw, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
			select {
			case <-next:
			case <-done:
				return
			}
		}
	}()
	send := func(parts ...[]byte) bool {
		bufs := make(net.Buffers, 0, len(parts))
		for _, p := range parts {
			if len(p) > 0 {
				bufs = append(bufs, p)
			}
		}
		if len(bufs) == 0 {
			return true
		}
		c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := bufs.WriteTo(c); err != nil {
			log.Debug("router write failed", "error", err)
			return false
		}
		return true
	}
	changed := s.cfg.Cache.Changed()
	negotiated := false
	for {
		select {
		case rd := <-reads:
			if rd.err != nil && !isProtocol(rd.err) {
				if !errors.Is(rd.err, io.EOF) {
					log.Debug("router read ended", "error", rd.err)
				}
				return
			}
			res := m.receive(rd.raw, rd.err)
			if m.version >= 0 && !negotiated {
				negotiated = true
				s.m.version(m.v())
				log.Info("router session", "version", m.version)
			}
			if res.query != "" {
				s.m.query(res.query)
			}
			if res.code != nil {
				s.m.errorSent(*res.code)
				log.Warn("error report sent to router", "code", res.code.String(), "close", res.close)
			}
			if !send(res.out, res.bulk, res.tail) || res.close || rd.err != nil {
				return
			}
			next <- struct{}{}
		case <-changed:
			changed = s.cfg.Cache.Changed()
			if b := m.changed(nil); len(b) > 0 {
				s.m.count(&s.m.notifies)
				if !send(b) {
					return
				}
			}
		}
	}
}

func isProtocol(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

type serverMetrics struct {
	mu       sync.Mutex
	refused  uint64
	notifies uint64
	queries  map[string]uint64
	errors   map[string]uint64
	versions [MaxVersion + 1]uint64
}

func (m *serverMetrics) version(v uint8) {
	m.mu.Lock()
	m.versions[v]++
	m.mu.Unlock()
}

func (m *serverMetrics) count(p *uint64) {
	m.mu.Lock()
	*p++
	m.mu.Unlock()
}

func (m *serverMetrics) query(kind string) {
	m.mu.Lock()
	if m.queries == nil {
		m.queries = map[string]uint64{}
	}
	m.queries[kind]++
	m.mu.Unlock()
}

func (m *serverMetrics) errorSent(c ErrorCode) {
	m.mu.Lock()
	if m.errors == nil {
		m.errors = map[string]uint64{}
	}
	m.errors[c.String()]++
	m.mu.Unlock()
}

// Stats are a server's counters and its cache's state.
type Stats struct {
	Routers  int               // connected now
	Refused  uint64            // connections closed at the limit
	Notifies uint64            // Serial Notify PDUs sent
	Queries  map[string]uint64 // by kind: reset, serial, serial-reset (answered with Cache Reset)
	Errors   map[string]uint64 // Error Reports sent, by code name
	Sessions [MaxVersion + 1]uint64
	Ready    bool
	Serial   uint64
	VRPs     int
}

// Stats returns the server's counters now.
func (s *Server) Stats() Stats {
	st := Stats{Routers: s.Routers()}
	st.Ready, st.Serial, st.VRPs = s.cfg.Cache.State()
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	st.Refused, st.Notifies, st.Sessions = s.m.refused, s.m.notifies, s.m.versions
	st.Queries, st.Errors = map[string]uint64{}, map[string]uint64{}
	for k, v := range s.m.queries {
		st.Queries[k] = v
	}
	for k, v := range s.m.errors {
		st.Errors[k] = v
	}
	return st
}

// WriteMetrics writes the server's metrics in the Prometheus text format:
// routers connected, connections refused at the limit, queries by kind,
// sessions by version, Serial Notifies sent, Error Reports sent by code,
// the cache's readiness, serial and VRP count.
func (s *Server) WriteMetrics(w io.Writer) {
	st := s.Stats()
	fmt.Fprintf(w, "# HELP keymesh_rtr_routers Routers connected to the RTR cache.\n# TYPE keymesh_rtr_routers gauge\nkeymesh_rtr_routers %d\n", st.Routers)
	fmt.Fprintf(w, "# HELP keymesh_rtr_refused_total Router connections closed at the limit.\n# TYPE keymesh_rtr_refused_total counter\nkeymesh_rtr_refused_total %d\n", st.Refused)
	fmt.Fprintf(w, "# HELP keymesh_rtr_notifies_total Serial Notify PDUs sent.\n# TYPE keymesh_rtr_notifies_total counter\nkeymesh_rtr_notifies_total %d\n", st.Notifies)
	fmt.Fprintf(w, "# HELP keymesh_rtr_queries_total Router queries, by kind (reset, serial, serial-reset: answered with Cache Reset).\n# TYPE keymesh_rtr_queries_total counter\n")
	for _, k := range sortedKeys(st.Queries) {
		fmt.Fprintf(w, "keymesh_rtr_queries_total{kind=%q} %d\n", k, st.Queries[k])
	}
	fmt.Fprintf(w, "# HELP keymesh_rtr_sessions_total Router sessions by the protocol version negotiated.\n# TYPE keymesh_rtr_sessions_total counter\n")
	for v, n := range st.Sessions {
		fmt.Fprintf(w, "keymesh_rtr_sessions_total{version=\"%d\"} %d\n", v, n)
	}
	fmt.Fprintf(w, "# HELP keymesh_rtr_errors_total Error Report PDUs sent, by code.\n# TYPE keymesh_rtr_errors_total counter\n")
	for _, k := range sortedKeys(st.Errors) {
		fmt.Fprintf(w, "keymesh_rtr_errors_total{code=%q} %d\n", k, st.Errors[k])
	}
	r := 0
	if st.Ready {
		r = 1
	}
	fmt.Fprintf(w, "# HELP keymesh_rtr_ready Whether the RTR cache has data.\n# TYPE keymesh_rtr_ready gauge\nkeymesh_rtr_ready %d\n", r)
	fmt.Fprintf(w, "# HELP keymesh_rtr_serial The RTR cache's serial (the Raft index of its data).\n# TYPE keymesh_rtr_serial gauge\nkeymesh_rtr_serial %d\n", st.Serial)
	fmt.Fprintf(w, "# HELP keymesh_rtr_vrps VRPs the RTR cache serves.\n# TYPE keymesh_rtr_vrps gauge\nkeymesh_rtr_vrps %d\n", st.VRPs)
}

func sortedKeys(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
