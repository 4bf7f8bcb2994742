package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// config is every setting of orderd. Each has a flag and an ORDERD_*
// environment variable; the flag wins.
type config struct {
	GRPCAddr             string
	MetricsAddr          string
	MySQLDSN             string
	MigrateOnStart       bool
	TokenTTL             time.Duration
	ExpiredTokenGrace    time.Duration
	OutcomeRetention     time.Duration
	JanitorInterval      time.Duration
	JanitorBatch         int
	TxAttempts           int
	LockWait             time.Duration
	DBMaxOpen            int
	DBMaxIdle            int
	MaxRecvMsgSize       int
	MaxConcurrentStreams uint
	KeepaliveMinTime     time.Duration
	HealthInterval       time.Duration
	ShutdownGrace        time.Duration
	LogLevel             string
	LogFormat            string
}

// envPrefix + upper-cased flag name with '-' → '_' is a flag's variable.
const envPrefix = "ORDERD_"

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args and, for flags not given, the
// environment. Errors name the setting.
func parseConfig(name string, args []string, getenv func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9090", "HTTP listen address for /metrics and /debug/pprof (empty: off)")
	fs.StringVar(&c.MySQLDSN, "mysql-dsn", "", "MySQL/MariaDB DSN, go-sql-driver format: user:pass@tcp(host:3306)/orderd (required)")
	fs.BoolVar(&c.MigrateOnStart, "migrate-on-start", true, "apply pending schema migrations when serve starts")
	fs.DurationVar(&c.TokenTTL, "token-ttl", time.Hour, "how long an issued order token stays usable")
	fs.DurationVar(&c.ExpiredTokenGrace, "expired-token-grace", time.Hour, "keep expired unused tokens this long before the janitor purges them (TOKEN_EXPIRED instead of TOKEN_NOT_FOUND)")
	fs.DurationVar(&c.OutcomeRetention, "outcome-retention", 30*24*time.Hour, "keep stored outcomes (replays) this long")
	fs.DurationVar(&c.JanitorInterval, "janitor-interval", time.Minute, "how often the janitor purges expired tokens and old outcomes (0: off)")
	fs.IntVar(&c.JanitorBatch, "janitor-batch", 1000, "rows per janitor DELETE")
	fs.IntVar(&c.TxAttempts, "tx-attempts", 4, "attempts of a transaction hit by deadlocks or lock wait timeouts before ABORTED")
	fs.DurationVar(&c.LockWait, "lock-wait", 5*time.Second, "longest wait for one row lock (innodb_lock_wait_timeout, whole seconds)")
	fs.IntVar(&c.DBMaxOpen, "db-max-open", 32, "maximum open database connections")
	fs.IntVar(&c.DBMaxIdle, "db-max-idle", 32, "maximum idle database connections")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", 1<<20, "largest accepted request in bytes")
	fs.UintVar(&c.MaxConcurrentStreams, "max-concurrent-streams", 1000, "concurrent calls per client connection")
	fs.DurationVar(&c.KeepaliveMinTime, "keepalive-min-time", 10*time.Second, "shortest client keepalive ping interval tolerated")
	fs.DurationVar(&c.HealthInterval, "health-interval", 2*time.Second, "how often the database is pinged for grpc.health.v1")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 25*time.Second, "on SIGTERM, how long calls in flight may finish before they are cancelled")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage of %s:\n  orderd [serve] [flags]\n  orderd migrate [up|status] [flags]\n  orderd version\n\nEvery flag can also be set with the environment variable shown; the flag wins.\n\n", name)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s (%s, default %q)\n    \t%s\n", f.Name, envName(f.Name), f.DefValue, f.Usage)
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && !set[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, e)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []string
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("-%s (%s): %s", flagName, envName(flagName), fmt.Sprintf(format, args...)))
	}
	if c.MySQLDSN == "" {
		bad("mysql-dsn", "required")
	} else if cfg, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
		bad("mysql-dsn", "%v", err)
	} else if cfg.DBName == "" {
		bad("mysql-dsn", "names no database (…/DBNAME)")
	}
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		bad("grpc-addr", "%v", err)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("metrics-addr", "%v", err)
		}
	}
	positive := map[string]time.Duration{"token-ttl": c.TokenTTL, "outcome-retention": c.OutcomeRetention,
		"lock-wait": c.LockWait, "keepalive-min-time": c.KeepaliveMinTime, "health-interval": c.HealthInterval}
	for name, d := range positive {
		if d <= 0 {
			bad(name, "must be positive")
		}
	}
	if c.LockWait > 0 && c.LockWait < time.Second {
		bad("lock-wait", "must be at least 1s (the server counts whole seconds)")
	}
	if c.ExpiredTokenGrace < 0 || c.JanitorInterval < 0 || c.ShutdownGrace < 0 {
		bad("expired-token-grace/janitor-interval/shutdown-grace", "must not be negative")
	}
	if c.JanitorBatch < 1 {
		bad("janitor-batch", "must be at least 1")
	}
	if c.TxAttempts < 1 {
		bad("tx-attempts", "must be at least 1")
	}
	if c.DBMaxOpen < 1 {
		bad("db-max-open", "must be at least 1")
	}
	if c.DBMaxIdle < 0 || c.DBMaxIdle > c.DBMaxOpen {
		bad("db-max-idle", "must be between 0 and -db-max-open")
	}
	if c.MaxRecvMsgSize < 1024 {
		bad("max-recv-msg-size", "must be at least 1024")
	}
	if c.MaxConcurrentStreams < 1 {
		bad("max-concurrent-streams", "must be at least 1")
	}
	if _, err := c.slogLevel(); err != nil {
		bad("log-level", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format", "must be text or json")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

func (c *config) slogLevel() (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(c.LogLevel))
	return l, err
}

func (c *config) logger(w io.Writer) *slog.Logger {
	level, _ := c.slogLevel()
	hopts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}

// redactedDSN is the DSN without its password, for logs and errors.
func redactedDSN(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}
