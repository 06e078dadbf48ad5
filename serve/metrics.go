package serve

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	hits      *prometheus.CounterVec
	started   prometheus.Counter
	failed    *prometheus.CounterVec
	duration  prometheus.Histogram
	collected *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix2aci_serve_requests_total", Help: "Requests answered, by status.",
		}, []string{"code"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix2aci_serve_cache_hits_total", Help: "Requests answered without a build of their own: disk (served from the data directory), joined (waited for a build another request started), failure (a failure remembered).",
		}, []string{"kind"}),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nix2aci_serve_builds_started_total", Help: "Builds started.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix2aci_serve_builds_failed_total", Help: "Builds failed, by the status answered.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nix2aci_serve_build_duration_seconds", Help: "Build and publish time.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}),
	}
	m.collected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nix2aci_serve_collected_total", Help: "Images removed to keep the data directory under --max-disk, by format: aci (image files, apps and layers), oci (images, each with the blobs no other image needs).",
	}, []string{"format"})
	m.collected.WithLabelValues("aci")
	m.collected.WithLabelValues("oci")
	m.reg.MustRegister(m.requests, m.hits, m.started, m.failed, m.duration, m.collected)
	return m
}

// Registry is the server's Prometheus registry (what /metrics shows).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }
