package cluster

import (
	"context"
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/routing/rtr"
)

// listenRTR binds Options.RTRAddr, if set, and makes the RTR server of
// the network's route authorizations (served by every root, leader or
// not: each answers from its own replica, at the same serials).
func (s *Server) listenRTR() error {
	if s.opts.RTRAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.RTRAddr)
	if err != nil {
		return fmt.Errorf("--rtr-addr %s: %w (choose another port, or stop what listens there)", s.opts.RTRAddr, err)
	}
	srv, err := rtr.NewServer(rtr.Config{Cache: rtr.NewCache(s.network, 0), Logger: s.log.Named("rtr"),
		MaxRouters: s.opts.RTR.MaxRouters, Timers: s.opts.RTR.Timers})
	if err != nil {
		ln.Close()
		return err
	}
	s.rtrLn, s.rtr = ln, srv
	return nil
}

// RTRAddr is the host:port routers reach this server's RTR cache at, or
// "" without one.
func (s *Server) RTRAddr() string {
	if s.rtrLn == nil {
		return ""
	}
	return s.rtrLn.Addr().String()
}

// serveRTR follows the store into the RTR cache and serves it until ctx
// ends.
func (s *Server) serveRTR(ctx context.Context) error {
	cache := s.rtr.Cache()
	errc := make(chan error, 1)
	go func() { errc <- rtr.Follow(ctx, s.store, cache) }()
	s.log.Info("serving route authorizations over RTR", "addr", s.RTRAddr())
	err := s.rtr.Run(ctx, s.rtrLn)
	if ferr := <-errc; err == nil {
		err = ferr
	}
	return err
}

var (
	descRTRRouters  = prometheus.NewDesc("keymesh_rtr_routers", "Routers connected to this server's RTR cache.", nil, nil)
	descRTRSerial   = prometheus.NewDesc("keymesh_rtr_serial", "The RTR cache's serial (the Raft index of its data).", nil, nil)
	descRTRVRPs     = prometheus.NewDesc("keymesh_rtr_vrps", "VRPs the RTR cache serves.", nil, nil)
	descRTRRefused  = prometheus.NewDesc("keymesh_rtr_refused_total", "Router connections closed at the limit.", nil, nil)
	descRTRNotifies = prometheus.NewDesc("keymesh_rtr_notifies_total", "Serial Notify PDUs sent.", nil, nil)
	descRTRQueries  = prometheus.NewDesc("keymesh_rtr_queries_total",
		"Router queries, by kind (reset, serial, serial-reset: answered with Cache Reset).", []string{"kind"}, nil)
	descRTRErrors   = prometheus.NewDesc("keymesh_rtr_errors_total", "Error Report PDUs sent, by code.", []string{"code"}, nil)
	descRTRSessions = prometheus.NewDesc("keymesh_rtr_sessions_total", "Router sessions by the protocol version negotiated.", []string{"version"}, nil)
)

// rtrCollector reads the RTR server's counters at scrape time.
type rtrCollector struct{ s *Server }

func (c *rtrCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRTRRouters, descRTRSerial, descRTRVRPs, descRTRRefused, descRTRNotifies, descRTRQueries, descRTRErrors, descRTRSessions} {
		ch <- d
	}
}

func (c *rtrCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.rtr == nil {
		return
	}
	st := c.s.rtr.Stats()
	ch <- prometheus.MustNewConstMetric(descRTRRouters, prometheus.GaugeValue, float64(st.Routers))
	ch <- prometheus.MustNewConstMetric(descRTRSerial, prometheus.GaugeValue, float64(st.Serial))
	ch <- prometheus.MustNewConstMetric(descRTRVRPs, prometheus.GaugeValue, float64(st.VRPs))
	ch <- prometheus.MustNewConstMetric(descRTRRefused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(descRTRNotifies, prometheus.CounterValue, float64(st.Notifies))
	for k, v := range st.Queries {
		ch <- prometheus.MustNewConstMetric(descRTRQueries, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range st.Errors {
		ch <- prometheus.MustNewConstMetric(descRTRErrors, prometheus.CounterValue, float64(v), k)
	}
	for v, n := range st.Sessions {
		ch <- prometheus.MustNewConstMetric(descRTRSessions, prometheus.CounterValue, float64(n), fmt.Sprint(v))
	}
}
