package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/cli"
	"github.com/postbox-dev/postbox/journal"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("run", "")
	store := addStoreFlags(fs)
	concurrency := fs.Int("concurrency", 64, "actors running handlers at once")
	checkpointEvery := fs.Int("checkpoint-every", 100, "checkpoint an actor's state every N completed messages")
	fs.IntVar(&store.keepCheckpoints, "keep-checkpoints", 3, "checkpoints kept per actor")
	fs.BoolVar(&store.compact, "compact", false, "delete attempt and effect entries older than the oldest kept checkpoint")
	maxAttempts := fs.Int("max-attempts", 5, "attempts before a message is dead-lettered")
	backoffInitial := fs.Duration("backoff-initial", 100*time.Millisecond, "delay before the first retry; doubles per retry")
	backoffMax := fs.Duration("backoff-max", 30*time.Second, "longest delay between retries")
	idleTimeout := fs.Duration("idle-timeout", 5*time.Minute, "passivate an actor after this long without messages")
	maxActors := fs.Int("max-actors", 10000, "actors held in memory at most")
	partitions := fs.Int("partitions", 0, "partitions of a new mailbox (0: 8 for SQLite, 12 for Kafka)")
	fs.IntVar(&store.replication, "replication", 1, "replication factor of new Kafka topics")
	fs.DurationVar(&store.sessionTimeout, "session-timeout", 45*time.Second, "Kafka group session: how soon a dead worker's partitions move to another (the broker allows 6s to 30m by default)")
	fs.DurationVar(&store.leaseTTL, "lease-ttl", 10*time.Second, "SQLite partition lease: how soon a dead worker's partitions move to another")
	admin := fs.String("admin", "", "serve /healthz, /readyz, /metrics and /actors/{type}/{id} on ADDR, e.g. 127.0.0.1:9090")
	sinkPath := fs.String("counter-sink", "", "append one JSON line per counter notify side effect to PATH")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long a graceful stop may take before in-flight work is abandoned")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		if errors.As(err, new(*cli.HelpRequested)) {
			fmt.Fprintf(stdout, "worker run [flags]\n\n%s", cli.FlagHelp(fs))
		}
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("run: unexpected argument %q", fs.Arg(0))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"concurrency", *concurrency}, {"checkpoint-every", *checkpointEvery}, {"max-attempts", *maxAttempts}, {"max-actors", *maxActors}} {
		if f.v < 1 {
			return cli.Usagef("--%s %d: must be at least 1", f.name, f.v)
		}
	}
	if *backoffInitial <= 0 || *backoffMax < *backoffInitial {
		return cli.Usagef("--backoff-initial %s, --backoff-max %s: need 0 < initial <= max", *backoffInitial, *backoffMax)
	}
	log, err := cli.NewLogger(*logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()

	if store.keepCheckpoints < 1 {
		return cli.Usagef("--keep-checkpoints %d: must be at least 1", store.keepCheckpoints)
	}
	if store.sessionTimeout <= 0 {
		return cli.Usagef("--session-timeout %s: must be positive", store.sessionTimeout)
	}
	if store.replication < 1 {
		return cli.Usagef("--replication %d: must be at least 1", store.replication)
	}
	store.createTopics = true
	mb, err := store.openMailbox(false, *partitions)
	if err != nil {
		return err
	}
	defer mb.Close()
	j, err := store.openJournal(false)
	if err != nil {
		return err
	}
	defer j.Close()

	var sink counter.Sink
	if *sinkPath != "" {
		fsink, err := counter.OpenFileSink(*sinkPath)
		if err != nil {
			return cli.Usagef("--counter-sink %q: %v", *sinkPath, err)
		}
		defer fsink.Close()
		sink = fsink
	}
	reg := actorhost.NewRegistry()
	if err := counter.Register(reg, sink); err != nil {
		return err
	}
	if err := tally.Register(reg); err != nil {
		return err
	}
	prom := prometheus.NewRegistry()
	prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	host, err := actorhost.New(actorhost.Config{
		Registry: reg, Consumer: mb.NewConsumer(), Journal: j, DeadLetters: mb.DLQ,
		Mailbox: mb.Name, Logger: log, Metrics: prom,
		Concurrency: *concurrency, MaxAttempts: *maxAttempts, CheckpointEvery: *checkpointEvery,
		BackoffInitial: *backoffInitial, BackoffMax: *backoffMax, IdleTimeout: *idleTimeout, MaxActors: *maxActors,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var srv *http.Server
	if *admin != "" {
		ln, err := net.Listen("tcp", *admin)
		if err != nil {
			return cli.Usagef("--admin %q: %v", *admin, err)
		}
		srv = &http.Server{Handler: adminHandler(host, reg, j, prom), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	}
	if err := host.Start(ctx); err != nil {
		return err
	}
	log.Info("worker running", zap.String("mailbox", store.mailbox), zap.String("journal", store.journal),
		zap.Int("concurrency", *concurrency))
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing in-flight messages", zap.Duration("timeout", *shutdown))
	case <-host.Stopped():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	stopErr := host.Stop(sctx)
	if srv != nil {
		srv.Shutdown(sctx)
	}
	st := host.Stats()
	log.Info("worker stopped", zap.Int64("processed", st.Processed), zap.Int64("dead_lettered", st.DeadLettered),
		zap.Int64("deduplicated", st.Deduplicated), zap.Int64("effects_executed", st.EffectsExecuted),
		zap.Int64("effects_answered", st.EffectsAnswered))
	if err := host.Err(); err != nil {
		return err
	}
	return stopErr
}

// adminHandler serves health, metrics and actor state.
func adminHandler(host *actorhost.Host, reg *actorhost.Registry, j journal.Journal, prom *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-host.Stopped():
			http.Error(w, "stopped", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(prom, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /actors/{type}/{id...}", func(w http.ResponseWriter, r *http.Request) {
		addr := channel.Address{Type: r.PathValue("type"), ID: r.PathValue("id")}
		st, err := reg.Replay(r.Context(), j, addr, actorhost.ReplayOptions{})
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
