package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/internal/cli"
)

// Config is what Run runs: the stores, the host's tuning and the admin
// server. The zero value runs on sqlite:postbox.db with the defaults.
type Config struct {
	// MailboxURL and JournalURL name the stores in the forms of package
	// backend. Both default to backend.DefaultURL.
	MailboxURL, JournalURL string
	Mailbox                backend.MailboxOptions
	Journal                backend.JournalOptions
	// Host tunes the host (Concurrency, MaxAttempts, …). Run fills in
	// Registry, Consumer, Journal, DeadLetters, Mailbox (from the mailbox
	// itself), Logger and Metrics.
	Host actorhost.Config
	// Admin, when set, is the address the admin endpoints listen on (see
	// AdminHandler).
	Admin string
	// ShutdownTimeout bounds a graceful stop. Defaults to 30s.
	ShutdownTimeout time.Duration
}

// Run runs a worker over reg until ctx ends, then stops it gracefully, or
// until the host stops by itself (its consumer failed), and returns why.
// Options other than the logger, metrics, admin routes and host
// adjustments do not apply.
func Run(ctx context.Context, reg *actorhost.Registry, cfg Config, opts ...Option) error {
	if err := checkRegistry(reg); err != nil {
		return err
	}
	o := newOptions(opts)
	if o.logger == nil {
		o.logger = zap.NewNop()
	}
	return run(ctx, reg, cfg, o)
}

func run(ctx context.Context, reg *actorhost.Registry, cfg Config, o *options) error {
	log := o.logger
	if cfg.MailboxURL == "" {
		cfg.MailboxURL = backend.DefaultURL
	}
	if cfg.JournalURL == "" {
		cfg.JournalURL = backend.DefaultURL
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.Mailbox.Logger == nil {
		cfg.Mailbox.Logger = log // one logger for every component
	}
	openCtx, cancelOpen := context.WithTimeout(ctx, openTimeout)
	mb, err := backend.OpenMailbox(openCtx, cfg.MailboxURL, cfg.Mailbox)
	if err != nil {
		cancelOpen()
		return err
	}
	defer mb.Close()
	j, err := backend.OpenJournal(openCtx, cfg.JournalURL, cfg.Journal)
	cancelOpen()
	if err != nil {
		return err
	}
	defer j.Close()

	metrics := o.metrics
	var gatherer prometheus.Gatherer
	if metrics == nil {
		own := prometheus.NewRegistry()
		own.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		metrics, gatherer = own, own
	} else if g, ok := metrics.(prometheus.Gatherer); ok {
		gatherer = g
	}
	hc := cfg.Host
	hc.Registry, hc.Consumer, hc.Journal, hc.DeadLetters = reg, mb.NewConsumer(), j, mb.DLQ
	hc.Logger, hc.Metrics = log, metrics
	for _, adjust := range o.hostConfig {
		adjust(&hc)
	}
	host, err := actorhost.New(hc)
	if err != nil {
		return err
	}

	var srv *http.Server
	if cfg.Admin != "" {
		ln, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			return Usagef("--admin %q: %v", cfg.Admin, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", AdminHandler(Admin{Host: host, Registry: reg, Journal: j, Metrics: gatherer}))
		for _, r := range o.routes {
			mux.Handle(r.pattern, r.handler)
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	}
	if err := host.Start(ctx); err != nil {
		return err
	}
	log.Info("worker running", zap.String("mailbox", cfg.MailboxURL), zap.String("journal", backend.Redact(cfg.JournalURL)),
		zap.Strings("types", reg.Types()), zap.Int("concurrency", hc.WithDefaults().Concurrency))
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing in-flight messages", zap.Duration("timeout", cfg.ShutdownTimeout))
	case <-host.Stopped():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
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

// cmdRun is the run subcommand: flags and POSTBOX_* variables to a Config.
func cmdRun(reg *actorhost.Registry, o *options, args []string) error {
	// First of all: a supervisor may stop the worker as soon as it starts.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
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
	fs.DurationVar(&store.leaseTTL, "lease-ttl", 10*time.Second, "SQLite and Redis partition lease: how soon a dead worker's partitions move to another")
	admin := fs.String("admin", "", "serve /healthz, /readyz, /metrics, /partitions and /actors/{type}/{id} on ADDR, e.g. 127.0.0.1:9090")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long a graceful stop may take before in-flight work is abandoned")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	for _, add := range o.runFlags {
		add(fs)
	}
	if err := cli.Parse(fs, args); err != nil {
		if errors.As(err, new(*cli.HelpRequested)) {
			fmt.Fprintf(o.stdout, "%s run [flags]\n\n%s", o.name, cli.FlagHelp(fs))
		}
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("run: unexpected argument %q", fs.Arg(0))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"concurrency", *concurrency}, {"checkpoint-every", *checkpointEvery}, {"max-attempts", *maxAttempts}, {"max-actors", *maxActors}} {
		if f.v < 1 {
			return Usagef("--%s %d: must be at least 1", f.name, f.v)
		}
	}
	if *backoffInitial <= 0 || *backoffMax < *backoffInitial {
		return Usagef("--backoff-initial %s, --backoff-max %s: need 0 < initial <= max", *backoffInitial, *backoffMax)
	}
	if store.keepCheckpoints < 1 {
		return Usagef("--keep-checkpoints %d: must be at least 1", store.keepCheckpoints)
	}
	if store.sessionTimeout <= 0 {
		return Usagef("--session-timeout %s: must be positive", store.sessionTimeout)
	}
	if store.replication < 1 {
		return Usagef("--replication %d: must be at least 1", store.replication)
	}
	if o.logger == nil {
		log, err := cli.NewLogger(*logLevel)
		if err != nil {
			return err
		}
		defer log.Sync()
		o.logger = log
	}
	for _, start := range o.runHooks {
		done, err := start(ctx)
		if err != nil {
			return err
		}
		if done != nil {
			defer done()
		}
	}
	store.createTopics = true
	cfg := Config{
		MailboxURL: store.mailbox, JournalURL: store.journal,
		Mailbox: store.mailboxOptions(false, *partitions), Journal: store.journalOptions(false),
		Host: actorhost.Config{
			Concurrency: *concurrency, MaxAttempts: *maxAttempts, CheckpointEvery: *checkpointEvery,
			BackoffInitial: *backoffInitial, BackoffMax: *backoffMax, IdleTimeout: *idleTimeout, MaxActors: *maxActors,
		},
		Admin: *admin, ShutdownTimeout: *shutdown,
	}
	return run(ctx, reg, cfg, o)
}
