package cluster

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keymesh/keymesh/fsm"
)

// metrics are one root server's Prometheus metrics, in a registry of its
// own (several servers share a process in tests). Counters are counted
// where things happen; Raft and the replicated state are read at scrape
// time, so an idle server costs nothing.
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec   // by route and status code
	latency   *prometheus.HistogramVec // by route
	commands  *prometheus.CounterVec   // applied entries, by type and result
	signed    prometheus.Counter       // certificates signed by this server
	proposals *prometheus.CounterVec   // writes proposed through this server, by result
	elected   prometheus.Counter       // times this server became leader
	bulletins prometheus.Counter       // revocation bulletins signed
	crlBuilds prometheus.Counter       // CRLs this server built and signed
	csrChecks prometheus.Counter       // certificate requests whose signature this server checked
	fedFetch  *prometheus.CounterVec   // federated networks' JWKS fetched, by network and result
	probes    *prometheus.CounterVec   // probes of a leader whose connection closed, by result (failover.go)
	notices   *prometheus.CounterVec   // commit notices to forwarding followers, by result (commitnotice.go)
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_api_requests_total",
			Help: "API requests answered, by route and HTTP status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keymesh_api_request_duration_seconds",
			Help:    "Time to answer an API request, by route (blocking queries wait by design).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_fsm_commands_total",
			Help: "Log entries applied to the replicated state, by command type and result (ok, rejected, ignored)."}, []string{"type", "result"}),
		signed: prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_ca_certificates_signed_total",
			Help: "Node certificates this server's issuer signed (registrations, approvals, renewals)."}),
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_proposals_total",
			Help: "Writes proposed through this server (applied here as leader or forwarded to the leader), by result: " +
				"ok, rejected (by the state machine), unknown_outcome, no_leader, failed."}, []string{"result"}),
		elected: prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_raft_leadership_gained_total",
			Help: "Times this server became the Raft leader."}),
		bulletins: prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_gossip_bulletins_signed_total",
			Help: "Revocation bulletins this server signed for its trust followers to gossip."}),
		crlBuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_ca_crl_builds_total",
			Help: "CRLs this server built and signed (after a change of what they list, or before nextUpdate)."}),
		csrChecks: prometheus.NewCounter(prometheus.CounterOpts{Name: "keymesh_ca_csr_checks_total",
			Help: "Certificate requests (registrations, approvals, renewals) whose signature this server checked: once per request."}),
		fedFetch: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_federation_fetches_total",
			Help: "Fetches of a federated network's published JWKS by this server as leader, by network and result (ok, failed)."}, []string{"network", "result"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_raft_leader_probes_total",
			Help: "Probes of the leader's Raft port after a connection from it closed, by result: alive, gone, unknown, " +
				"heard (the port refused but the leader's heartbeats went on); " +
				"election counts the elections a gone leader started here without waiting for the heartbeat timeout."}, []string{"result"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keymesh_raft_commit_notices_total",
			Help: "What this server as leader did to tell a follower that forwarded a write its commit, by result: " +
				"told (a commit notice did), barrier (a Raft barrier stood in)."}, []string{"result"}),
	}
	blocking := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keymesh_trust_blocking_queries",
		Help: "Blocking trust queries waiting on this server (followers of the trust state)."},
		func() float64 { return float64(s.blocking.inFlight()) })
	for _, r := range []probeResult{probeAlive, probeGone, probeHeard, probeUnknown, probeElection} {
		m.probes.WithLabelValues(string(r)) // every series from the start, at 0
	}
	for _, r := range []string{noticeTold, noticeBarrier} {
		m.notices.WithLabelValues(r)
	}
	m.reg.MustRegister(m.requests, m.latency, m.commands, m.signed, m.proposals, m.elected, m.bulletins, m.crlBuilds, m.csrChecks, m.fedFetch, m.probes, m.notices, blocking,
		&stateCollector{s: s}, &rtrCollector{s: s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// federationFetch counts one fetch of network's JWKS.
func (m *metrics) federationFetch(network string, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.fedFetch.WithLabelValues(network, result).Inc()
}

// probed counts one probe of a leader, or one election it started.
func (m *metrics) probed(r probeResult) { m.probes.WithLabelValues(string(r)).Inc() }

// applied counts one applied log entry.
func (m *metrics) applied(res fsm.Result) {
	result := "ok"
	switch {
	case res.Ignored:
		result = "ignored"
	case res.Err != nil:
		result = "rejected"
	}
	m.commands.WithLabelValues(res.Type.String(), result).Inc()
}

// proposed counts one write proposed through this server.
func (m *metrics) proposed(err error) {
	var ce *fsm.CommandError
	result := "ok"
	switch {
	case err == nil:
	case errors.As(err, &ce):
		result = "rejected"
	case errors.Is(err, ErrUnknownOutcome):
		result = "unknown_outcome"
	case errors.Is(err, ErrNoLeader):
		result = "no_leader"
	default:
		result = "failed"
	}
	m.proposals.WithLabelValues(result).Inc()
}

// instrument counts the requests of one route and times them.
func (m *metrics) instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	hist := m.latency.WithLabelValues(route)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		hist.Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	}
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// statusWriter remembers the status code a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush passes flushes on (the blocking trust query streams nothing, but
// handlers may flush).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	descRaftState = prometheus.NewDesc("keymesh_raft_state",
		"1 for this server's Raft state (leader, follower, candidate, shutdown), 0 for the others.", []string{"state"}, nil)
	descRaftTerm        = prometheus.NewDesc("keymesh_raft_term", "The current Raft term.", nil, nil)
	descRaftCommitIndex = prometheus.NewDesc("keymesh_raft_commit_index", "The highest log index known to be committed.", nil, nil)
	descRaftApplied     = prometheus.NewDesc("keymesh_raft_applied_index", "The last log index applied to the replicated state.", nil, nil)
	descRaftLastIndex   = prometheus.NewDesc("keymesh_raft_last_log_index", "The last index in this server's log.", nil, nil)
	descRaftContact     = prometheus.NewDesc("keymesh_raft_last_contact_seconds",
		"Seconds since a follower last heard from the leader (0 on the leader).", nil, nil)
	descRaftVoters = prometheus.NewDesc("keymesh_raft_voters", "Voters in the Raft configuration.", nil, nil)
	descRecords    = prometheus.NewDesc("keymesh_state_records",
		"Records in the replicated state, by table.", []string{"table"}, nil)
)

// stateCollector reads Raft and the replicated state at scrape time.
type stateCollector struct{ s *Server }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftCommitIndex, descRaftApplied,
		descRaftLastIndex, descRaftContact, descRaftVoters, descRecords} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if node := c.s.node; node != nil {
		r := node.raft
		state := r.State()
		for _, st := range []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown} {
			v := 0.0
			if st == state {
				v = 1
			}
			gauge(descRaftState, v, st.String())
		}
		gauge(descRaftTerm, float64(r.CurrentTerm()))
		gauge(descRaftCommitIndex, float64(r.CommitIndex()))
		gauge(descRaftApplied, float64(r.AppliedIndex()))
		gauge(descRaftLastIndex, float64(r.LastIndex()))
		contact := 0.0
		if state != raft.Leader {
			if t := r.LastContact(); !t.IsZero() {
				contact = time.Since(t).Seconds()
			}
		}
		gauge(descRaftContact, contact)
		if f := r.GetConfiguration(); f.Error() == nil {
			voters := 0
			for _, srv := range f.Configuration().Servers {
				if srv.Suffrage == raft.Voter {
					voters++
				}
			}
			gauge(descRaftVoters, float64(voters))
		}
	}
	n := c.s.store.Sizes()
	for table, v := range map[string]int{"servers": n.Servers, "issuers": n.Issuers, "join_tokens": n.JoinTokens,
		"revocations": n.Revocations, "trust_anchors": n.TrustAnchors, "nodes": n.Nodes, "issued": n.Issued,
		"jwks": n.JWKS, "registrations": n.Registrations, "route_auths": n.RouteAuths} {
		gauge(descRecords, float64(v), table)
	}
}
