package actorhost_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// Two hosts share one registry when their constant labels differ; the
// same labels twice get an error that says what to do. Handler time is
// labelled by actor type.
func TestTwoHostsOnOneMetricsRegistry(t *testing.T) {
	t.Parallel()
	prom := prometheus.NewRegistry()
	a, b := setup(t), setup(t)
	cfgA := a.config()
	cfgA.Metrics, cfgA.MetricLabels = prom, prometheus.Labels{"mailbox": "a"}
	cfgB := b.config()
	cfgB.Metrics, cfgB.MetricLabels = prom, prometheus.Labels{"mailbox": "b"}
	ha := a.start(cfgA)
	hb := b.start(cfgB)
	a.publish(add("counter/1", "a1", 1), add("counter/1", "a2", 1))
	b.publish(add("counter/1", "b1", 1))
	waitfor.Until(t, 10*time.Second, "both hosts processed", func() bool {
		return ha.Stats().Processed == 2 && hb.Stats().Processed == 1
	})
	want := `
# HELP postbox_messages_processed_total Messages handled successfully.
# TYPE postbox_messages_processed_total counter
postbox_messages_processed_total{mailbox="a"} 2
postbox_messages_processed_total{mailbox="b"} 1
`
	if err := testutil.GatherAndCompare(prom, strings.NewReader(want), "postbox_messages_processed_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(prom, "postbox_handler_duration_seconds"); err != nil || n != 2 {
		t.Errorf("handler duration series: %d (%v), want one per host for the counter type", n, err)
	}
	families, _ := prom.Gather()
	for _, f := range families {
		if f.GetName() != "postbox_handler_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["type"] != "counter" {
				t.Errorf("handler duration labels %v, want type=counter", labels)
			}
		}
	}

	cfgC := setup(t).config()
	cfgC.Metrics, cfgC.MetricLabels = prom, prometheus.Labels{"mailbox": "a"}
	if _, err := actorhost.New(cfgC); err == nil || !strings.Contains(err.Error(), "give each host its own Config.MetricLabels") {
		t.Errorf("a third host with the first one's labels: %v", err)
	}
}
