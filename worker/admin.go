package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/journal"
)

// Admin is what AdminHandler serves.
type Admin struct {
	Host     *actorhost.Host     // for /readyz and /partitions; nil: always ready, no /partitions
	Registry *actorhost.Registry // the types /actors/ can rebuild
	Journal  journal.Journal
	Metrics  prometheus.Gatherer // for /metrics; nil: no /metrics
}

// AdminHandler serves GET /healthz, /readyz (503 once the host has
// stopped), /metrics in Prometheus format, /partitions: the partitions the
// host holds, as a JSON array of actorhost.PartitionClaim (partition,
// journal epoch, since, in_flight, stopping), and /actors/{type}/{id}: the
// actor's durable state as JSON, rebuilt from its checkpoint and journal,
// with its journal sequence in the Postbox-Journal-Seq header (404 for a
// type the registry does not know). Mount it in a mux of your own, or let
// the run subcommand serve it on --admin.
func AdminHandler(a Admin) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.Host != nil {
			select {
			case <-a.Host.Stopped():
				http.Error(w, "stopped", http.StatusServiceUnavailable)
				return
			default:
			}
		}
		fmt.Fprintln(w, "ready")
	})
	if a.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics, promhttp.HandlerOpts{}))
	}
	if a.Host != nil {
		mux.HandleFunc("GET /partitions", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(a.Host.Claims())
		})
	}
	mux.HandleFunc("GET /actors/{type}/{id...}", func(w http.ResponseWriter, r *http.Request) {
		addr := channel.Address{Type: r.PathValue("type"), ID: r.PathValue("id")}
		st, err := a.Registry.Replay(r.Context(), a.Journal, addr, actorhost.ReplayOptions{})
		if errors.Is(err, actorhost.ErrUnknownActorType) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Postbox-Journal-Seq", fmt.Sprint(st.Seq))
		json.NewEncoder(w).Encode(st.State)
	})
	return mux
}
