package reconciler

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	mesh "github.com/meshgit/mesh"
)

// metrics are one server's Prometheus metrics, in a registry of its own (several servers may run
// in one process, as in tests).
type metrics struct {
	reg             *prometheus.Registry
	compileDuration prometheus.Histogram
	commitToApply   prometheus.Histogram
	lastSuccess     prometheus.Gauge
	fetches         prometheus.Counter
	stepErrors      *prometheus.CounterVec
	webhooks        *prometheus.CounterVec
	leaderChanges   prometheus.Counter
	publishErrors   prometheus.Counter
	verifyFailures  prometheus.Counter
	verifyDuration  prometheus.Histogram
	snapshotRepairs prometheus.Counter
	storageErrors   *prometheus.CounterVec
	served          *prometheus.GaugeVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		compileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mesh_compile_duration_seconds", Help: "Time to compile one commit.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		commitToApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mesh_commit_to_apply_seconds", Help: "From noticing a new commit to its snapshot being committed by Raft.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_last_success_timestamp_seconds", Help: "When a commit was last applied."}),
		fetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_git_fetches_total", Help: "Reconcile passes (each fetches a remote, or re-reads a local repository)."}),
		stepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_reconcile_errors_total", Help: "Failed reconcile steps."}, []string{"step"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_webhooks_total", Help: "Webhook deliveries by outcome."}, []string{"result"}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_raft_leadership_changes_total", Help: "Times this server gained or lost leadership."}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_publish_errors_total", Help: "Snapshots the xDS server refused."}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_snapshot_verify_failures_total", Help: "Snapshots built from a Raft delta that did not hash to their version (not served)."}),
		verifyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mesh_snapshot_verify_seconds", Help: "Time to check that a snapshot built from a Raft delta hashes to its version, before serving it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		snapshotRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_snapshot_repairs_total", Help: "Snapshots that failed their check and were replaced by a peer's copy."}),
		storageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_storage_errors_total", Help: "Failed writes to the data directory (raft-log, raft-stable, raft-snapshot, served-cache)."}, []string{"op"}),
		served: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mesh_served_info", Help: "The snapshot this server serves (value 1)."}, []string{"version", "commit"}),
	}
	m.reg.MustRegister(m.compileDuration, m.commitToApply, m.lastSuccess, m.fetches, m.stepErrors, m.webhooks,
		m.leaderChanges, m.publishErrors, m.verifyFailures, m.verifyDuration, m.snapshotRepairs, m.storageErrors, m.served, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{s})
	m.reg.MustRegister(s.cfg.Collectors...)
	return m
}

func (m *metrics) setServed(snap *mesh.Snapshot) {
	m.served.Reset()
	m.served.WithLabelValues(snap.Version, snap.Commit).Set(1)
}

// stateCollector reports, at scrape time, the Raft state and the proxies by acked version.
type stateCollector struct{ s *Server }

var (
	raftStateDesc = prometheus.NewDesc("mesh_raft_state", "Raft state of this server (1 for the current one).", []string{"state"}, nil)
	raftIndexDesc = prometheus.NewDesc("mesh_raft_applied_index", "The last Raft index applied to the FSM.", nil, nil)
	proxiesDesc   = prometheus.NewDesc("mesh_proxies", "Connected proxies by the snapshot version they acked.", []string{"version"}, nil)
	storageDesc   = prometheus.NewDesc("mesh_storage_failing", "1 while the last write of this kind to the data directory failed.", []string{"op"}, nil)
	servingDesc   = prometheus.NewDesc("mesh_serving", "1 while this server serves xDS, 0 while it refuses (removed, or another cluster claims it).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- raftStateDesc
	ch <- raftIndexDesc
	ch <- proxiesDesc
	ch <- storageDesc
	ch <- servingDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if n := c.s.node; n != nil && n.raft != nil {
		cur := n.raft.State().String()
		for _, st := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
			v := 0.0
			if st == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, v, st)
		}
		ch <- prometheus.MustNewConstMetric(raftIndexDesc, prometheus.GaugeValue, float64(n.raft.AppliedIndex()))
	}
	for _, e := range c.s.storage.errors() {
		ch <- prometheus.MustNewConstMetric(storageDesc, prometheus.GaugeValue, 1, e.Op)
	}
	serving := 1.0
	if c.s.notServing() != "" {
		serving = 0
	}
	ch <- prometheus.MustNewConstMetric(servingDesc, prometheus.GaugeValue, serving)
	if c.s.cfg.Proxies != nil {
		by := map[string]int{}
		for _, p := range c.s.cfg.Proxies() {
			by[p.AckedVersion]++
		}
		for v, n := range by {
			ch <- prometheus.MustNewConstMetric(proxiesDesc, prometheus.GaugeValue, float64(n), v)
		}
	}
}
