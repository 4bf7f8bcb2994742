// Command orderd serves the order.v1 gRPC API: exactly-once order placement
// with server-issued tokens on MySQL/MariaDB.
//
//	orderd [serve] [flags]      serve gRPC (default)
//	orderd migrate [up|status]  apply or list schema migrations
//	orderd version              print the version
//
// orderd -h lists every flag and its ORDERD_* environment variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/store"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "orderd:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "migrate" || args[0] == "version") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "orderd", version)
		return nil
	case "migrate":
		sub := "up"
		if len(args) > 0 && (args[0] == "up" || args[0] == "status") {
			sub, args = args[0], args[1:]
		}
		cfg, err := parseConfig("orderd migrate "+sub, args, getenv, stderr)
		if err != nil {
			return err
		}
		return migrate(ctx, cfg, sub, stdout)
	}
	cfg, err := parseConfig("orderd serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, cfg.logger(stderr))
}

func openStore(ctx context.Context, cfg *config, opts store.Options) (*store.Store, error) {
	opts.TokenTTL = cfg.TokenTTL
	opts.LockWait = cfg.LockWait
	opts.TxAttempts = cfg.TxAttempts
	opts.MaxOpenConns = cfg.DBMaxOpen
	opts.MaxIdleConns = cfg.DBMaxIdle
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := store.Open(octx, cfg.MySQLDSN, opts)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", redactedDSN(cfg.MySQLDSN), err)
	}
	return st, nil
}

func migrate(ctx context.Context, cfg *config, sub string, out io.Writer) error {
	st, err := openStore(ctx, cfg, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	if sub == "up" {
		done, err := st.Migrate(ctx)
		for _, m := range done {
			fmt.Fprintf(out, "applied %04d %s\n", m.Version, m.Name)
		}
		if err != nil {
			return err
		}
		if len(done) == 0 {
			fmt.Fprintln(out, "schema is up to date")
		}
		return nil
	}
	ms, err := st.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		state := "pending"
		if !m.Applied.IsZero() {
			state = "applied " + m.Applied.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%04d %-30s %s\n", m.Version, m.Name, state)
	}
	return nil
}

func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	// The driver's own messages (such as "closing bad idle connection")
	// go to the same log.
	_ = mysql.SetLogger(mysqlLogger{log})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg)
	// Certificates, tokens and policy first: a bad file should not wait for
	// the database.
	tlsCfg, auth, err := cfg.security(log)
	if err != nil {
		return err
	}

	st, err := openStore(ctx, cfg, store.Options{OnRetry: metrics.TxRetry})
	if err != nil {
		return err
	}
	// Closed only after the gRPC server has drained: no call in flight
	// loses its connection pool.
	defer st.Close()
	reg.MustRegister(collectors.NewDBStatsCollector(st.DB(), "orderd"))
	if cfg.MigrateOnStart {
		done, err := st.Migrate(ctx)
		if err != nil {
			return err
		}
		for _, m := range done {
			log.Info("applied migration", "version", m.Version, "name", m.Name)
		}
	}

	srv, err := server.New(st, server.Options{
		Logger:               log,
		MaxRecvMsgSize:       cfg.MaxRecvMsgSize,
		MaxConcurrentStreams: uint32(cfg.MaxConcurrentStreams),
		KeepaliveMinTime:     cfg.KeepaliveMinTime,
		HealthInterval:       cfg.HealthInterval,
		Metrics:              metrics,
		TLS:                  tlsCfg,
		Auth:                 auth,
		DisableReflection:    !cfg.Reflection,
		IssueTokenRate:       cfg.IssueTokenRate,
		IssueTokenBurst:      cfg.IssueTokenBurst,
		MaxOutstandingTokens: cfg.MaxOutstandingTokens,
	})
	if err != nil && cfg.PolicyFile != "" {
		// The policy names methods the server does not have.
		return fmt.Errorf("-policy-file (%s) %s: %w", envName("policy-file"), cfg.PolicyFile, err)
	}
	if err != nil {
		return err
	}
	warnInsecure(log, cfg, auth)

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("-grpc-addr: %w", err)
	}
	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("-metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(mlis)
		log.Info("metrics listening", "addr", mlis.Addr().String())
	}

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { srv.WatchDatabase(bg) })
	wg.Go(func() {
		server.RunJanitor(bg, st, server.JanitorOptions{
			Interval: cfg.JanitorInterval, Batch: cfg.JanitorBatch, RowsPerSecond: cfg.JanitorRate,
			TokenGrace: cfg.ExpiredTokenGrace, OutcomeRetention: cfg.OutcomeRetention,
			OnPurge: metrics.Purged,
		}, log)
	})

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("orderd serving", "version", version, "grpc_addr", lis.Addr().String(), "database", redactedDSN(cfg.MySQLDSN),
		"tls", tlsCfg != nil, "client_certificates", cfg.TLSClientCA != "", "bearer_tokens", cfg.BearerTokensFile != "", "policy", cfg.PolicyFile != "")

	select {
	case err = <-serveErr:
	case <-ctx.Done():
		log.Info("shutting down", "grace", cfg.ShutdownGrace)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		srv.Shutdown(sctx)
		cancel()
		err = <-serveErr
	}
	stopBG()
	wg.Wait()
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	log.Info("stopped")
	return err
}

// warnInsecure logs the ways in which the configuration leaves calls open.
func warnInsecure(log *slog.Logger, cfg *config, auth *server.Auth) {
	if cfg.InsecurePlaintext && !isLoopback(cfg.GRPCAddr) {
		log.Warn("serving plaintext gRPC on a non-loopback address (-insecure-plaintext): anyone on the path can read and alter calls",
			"grpc_addr", cfg.GRPCAddr)
		if cfg.BearerTokensFile != "" {
			log.Warn("bearer tokens travel in plaintext (-bearer-tokens-file without TLS)")
		}
	}
	if auth == nil && !isLoopback(cfg.GRPCAddr) {
		log.Warn("no caller authentication (-tls-client-ca or -bearer-tokens-file): every caller may call every method, PutProduct included",
			"grpc_addr", cfg.GRPCAddr)
	}
}

// mysqlLogger adapts slog to go-sql-driver's logger.
type mysqlLogger struct{ log *slog.Logger }

func (l mysqlLogger) Print(v ...any) { l.log.Warn(fmt.Sprint(v...), "component", "mysql") }
