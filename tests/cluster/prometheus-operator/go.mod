module example.invalid/testenv/prometheus-operator

go 1.26.8

// Nothing is built: build.sh copies the monitoring.coreos.com CRDs out of this module.
require github.com/prometheus-operator/prometheus-operator v0.85.0
