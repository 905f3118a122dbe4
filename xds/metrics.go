package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics; Collectors exposes them for the HTTP server's
// registry (the server does not register them globally, so that tests can run many servers).
type metrics struct {
	// ackCounts are the counters of acks by type URL as received (a type URL not served counts
	// as "other"), so that an ACK costs no label lookup; under Server.mu.
	ackCounts    map[string]prometheus.Counter
	acks         *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	pushes       prometheus.Counter
	renders      prometheus.Counter
	setSnapshot  prometheus.Histogram
	rejected     *prometheus.CounterVec
	proxies      prometheus.GaugeFunc
	streamsGauge prometheus.GaugeFunc
}

func newMetrics(s *Server) *metrics {
	return &metrics{
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_xds_acks_total", Help: "xDS responses ACKed by proxies, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_xds_nacks_total", Help: "xDS responses NACKed by proxies, by resource type.",
		}, []string{"type"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_xds_pushes_total", Help: "Per-node configuration changes handed to the xDS cache.",
		}),
		renders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_xds_renders_total", Help: "Per-proxy (service and shape) renderings.",
		}),
		setSnapshot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mesh_xds_set_snapshot_seconds", Help: "Time to render and publish a mesh snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_xds_rejected_streams_total", Help: "xDS streams refused, by reason.",
		}, []string{"reason"}),
		proxies: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mesh_xds_connected_proxies", Help: "Nodes with at least one open xDS stream.",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			n := 0
			for _, nd := range s.nodes {
				if len(nd.streams) > 0 {
					n++
				}
			}
			return float64(n)
		}),
		streamsGauge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mesh_xds_streams", Help: "Open xDS streams.",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.streams))
		}),
	}
}

// Collectors returns the server's Prometheus collectors, for the caller to register.
func (s *Server) Collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.acks, m.nacks, m.pushes, m.renders, m.setSnapshot, m.rejected, m.proxies, m.streamsGauge}
}

// maxAckCounters bounds metrics.ackCounts (type URLs come from clients).
const maxAckCounters = 32

// ack counts an ACK of typeURL. Called with Server.mu held.
func (m *metrics) ack(typeURL string) {
	c := m.ackCounts[typeURL]
	if c == nil {
		c = m.acks.WithLabelValues(metricType(typeURL))
		if m.ackCounts == nil {
			m.ackCounts = map[string]prometheus.Counter{}
		}
		if len(m.ackCounts) < maxAckCounters {
			m.ackCounts[typeURL] = c
		}
	}
	c.Inc()
}
