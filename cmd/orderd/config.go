package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/orderd/orderd/server"
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
	JanitorRate          float64
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

	TLSCert              string
	TLSKey               string
	TLSClientCA          string
	InsecurePlaintext    bool
	BearerTokensFile     string
	PolicyFile           string
	Reflection           bool
	IssueTokenRate       float64
	IssueTokenBurst      int
	MaxOutstandingTokens int
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
	fs.Float64Var(&c.JanitorRate, "janitor-rate", 2000, "rows per second each replica's janitor deletes at most, pausing between batches (0: back to back)")
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
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) of the gRPC listener; with -tls-key turns TLS on; reread when the file changes")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: require client certificates signed by it (mTLS); the certificate's URI SAN, DNS SAN or CN is the caller's identity")
	fs.BoolVar(&c.InsecurePlaintext, "insecure-plaintext", false, "allow plaintext gRPC on a non-loopback -grpc-addr (without TLS orderd only listens on loopback)")
	fs.StringVar(&c.BearerTokensFile, "bearer-tokens-file", "", "file of accepted bearer tokens, one per line: SHA-256 hex of the token, then the identity it stands for")
	fs.StringVar(&c.PolicyFile, "policy-file", "", "JSON policy: which identity may call which methods (needs -tls-client-ca or -bearer-tokens-file)")
	fs.BoolVar(&c.Reflection, "reflection", true, "serve gRPC server reflection (reachable without identity)")
	fs.Float64Var(&c.IssueTokenRate, "issue-token-rate", 10, "IssueToken calls per second allowed per customer on each replica (0: no limit)")
	fs.IntVar(&c.IssueTokenBurst, "issue-token-burst", 20, "IssueToken calls a customer may make at once before -issue-token-rate applies")
	fs.IntVar(&c.MaxOutstandingTokens, "max-outstanding-tokens", 100, "unused, unexpired tokens a customer may hold (0: no cap)")
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
	if !(c.JanitorRate >= 0) {
		bad("janitor-rate", "must not be negative (0: unpaced)")
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
	c.validateSecurity(bad)
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// validateSecurity checks the transport, identity and limit settings.
func (c *config) validateSecurity(bad func(flagName, format string, args ...any)) {
	tls := c.TLSCert != "" || c.TLSKey != ""
	if tls && (c.TLSCert == "" || c.TLSKey == "") {
		bad("tls-cert/tls-key", "set both or neither")
	}
	if c.TLSClientCA != "" && !tls {
		bad("tls-client-ca", "client certificates need TLS: set -tls-cert and -tls-key")
	}
	if c.InsecurePlaintext && tls {
		bad("insecure-plaintext", "contradicts -tls-cert/-tls-key; choose one")
	}
	if !tls && !c.InsecurePlaintext && !isLoopback(c.GRPCAddr) {
		bad("grpc-addr", "%s is not a loopback address, and without TLS orderd serves only loopback: set -tls-cert and -tls-key (and -tls-client-ca or -bearer-tokens-file to know the callers), or -insecure-plaintext to serve plaintext anyway", c.GRPCAddr)
	}
	if c.PolicyFile != "" && c.TLSClientCA == "" && c.BearerTokensFile == "" {
		bad("policy-file", "a policy needs identities: set -tls-client-ca (mTLS) or -bearer-tokens-file")
	}
	if c.IssueTokenRate < 0 {
		bad("issue-token-rate", "must not be negative")
	}
	if c.IssueTokenBurst < 1 {
		bad("issue-token-burst", "must be at least 1")
	}
	if c.MaxOutstandingTokens < 0 {
		bad("max-outstanding-tokens", "must not be negative")
	}
}

// isLoopback reports whether a listen address (host:port) is on loopback
// only; an empty host (all interfaces) is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// security loads the TLS, identity and policy files into server options.
// Errors name the setting.
func (c *config) security(log *slog.Logger) (*tls.Config, *server.Auth, error) {
	var tlsCfg *tls.Config
	if c.TLSCert != "" {
		var err error
		tlsCfg, err = server.NewServerTLS(server.TLSFiles{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA}, log)
		if err != nil {
			return nil, nil, fmt.Errorf("-tls-cert/-tls-key/-tls-client-ca (%s, %s, %s): %w", envName("tls-cert"), envName("tls-key"), envName("tls-client-ca"), err)
		}
	}
	if c.TLSClientCA == "" && c.BearerTokensFile == "" && c.PolicyFile == "" {
		return tlsCfg, nil, nil
	}
	auth := &server.Auth{}
	if c.BearerTokensFile != "" {
		t, err := server.LoadBearerTokens(c.BearerTokensFile)
		if err != nil {
			return nil, nil, fmt.Errorf("-bearer-tokens-file (%s) %s: %w", envName("bearer-tokens-file"), c.BearerTokensFile, err)
		}
		auth.Tokens = t
	}
	if c.PolicyFile != "" {
		p, err := server.LoadPolicy(c.PolicyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("-policy-file (%s) %s: %w", envName("policy-file"), c.PolicyFile, err)
		}
		auth.Policy = p
	}
	return tlsCfg, auth, nil
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
