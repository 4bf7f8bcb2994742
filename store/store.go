// Package store owns orderd's data: order tokens, products, orders and the
// stored outcomes that make PlaceOrder exactly-once, in a MySQL-compatible
// database (MySQL 8, MariaDB 10.11). It defines the domain types and errors;
// it knows nothing of gRPC or protobuf.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Options tunes a Store. The zero value of each field selects its default.
type Options struct {
	// TokenTTL is how long an issued token stays usable (default 1h).
	TokenTTL time.Duration
	// LockWait bounds one wait for a row lock, in whole seconds on the
	// server (innodb_lock_wait_timeout; default 5s).
	LockWait time.Duration
	// TxAttempts is how many times a transaction runs before deadlocks or
	// lock wait timeouts become ErrContention (default 4).
	TxAttempts int
	// MaxOpenConns and MaxIdleConns size the connection pool (default 32).
	MaxOpenConns int
	MaxIdleConns int
	// ConnMaxLifetime recycles connections (default 5m).
	ConnMaxLifetime time.Duration
	// OnRetry, if set, is called before a transaction is retried, with the
	// cause ("deadlock" or "lock_wait_timeout").
	OnRetry func(cause string)
	// Now is the clock (default time.Now). Tests move it to expire tokens.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	if o.LockWait <= 0 {
		o.LockWait = 5 * time.Second
	}
	if o.TxAttempts <= 0 {
		o.TxAttempts = 4
	}
	if o.MaxOpenConns <= 0 {
		o.MaxOpenConns = 32
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = o.MaxOpenConns
	}
	if o.ConnMaxLifetime <= 0 {
		o.ConnMaxLifetime = 5 * time.Minute
	}
	if o.OnRetry == nil {
		o.OnRetry = func(string) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store is orderd's database. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	opts Options
}

// Open connects to the database named by dsn (go-sql-driver/mysql format)
// and checks that it answers. It adds the driver parameters the store relies
// on (parseTime, UTC, interpolated parameters, READ COMMITTED, lock wait,
// strict SQL mode) to whatever the DSN says. It returns ErrUnavailable,
// wrapped, when the server cannot be reached.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	opts.setDefaults()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("the DSN names no database (…/DBNAME)")
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// Arguments are escaped into the statement text (one round trip per
	// statement, no prepare), which also makes multi-statement round trips
	// safe: no SQL is ever built from input, only placeholders are.
	// PlaceOrder sends its writes as one.
	cfg.InterpolateParams = true
	cfg.MultiStatements = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	isolationVar, err := isolationVariable(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// READ COMMITTED: a statement that waited for a concurrent duplicate's
	// lock must then see what that duplicate committed (its outcome).
	cfg.Params[isolationVar] = "'READ-COMMITTED'"
	cfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(max(1, int(opts.LockWait.Round(time.Second)/time.Second)))
	cfg.Params["sql_mode"] = "'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
	cfg.Params["time_zone"] = "'+00:00'"

	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(opts.MaxOpenConns)
	db.SetMaxIdleConns(opts.MaxIdleConns)
	db.SetConnMaxLifetime(opts.ConnMaxLifetime)
	db.SetConnMaxIdleTime(time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping %s: %w", cfg.Addr, classify(ctx, err))
	}
	return &Store{db: db, opts: opts}, nil
}

// isolationVariable asks the server which session variable sets the
// isolation level: MariaDB before 11.1 knows only tx_isolation, MySQL 8 only
// transaction_isolation.
func isolationVariable(ctx context.Context, cfg *mysql.Config) (string, error) {
	probe := cfg.Clone()
	probe.DBName = ""
	connector, err := mysql.NewConnector(probe)
	if err != nil {
		return "", fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return "", fmt.Errorf("connect to %s: %w", cfg.Addr, classify(ctx, err))
	}
	if !strings.Contains(strings.ToLower(version), "mariadb") {
		return "transaction_isolation", nil
	}
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = 'TRANSACTION_ISOLATION'").Scan(&n)
	if err == nil && n > 0 {
		return "transaction_isolation", nil
	}
	return "tx_isolation", nil
}

// DB returns the connection pool, for pool statistics and health checks.
func (s *Store) DB() *sql.DB { return s.db }

// Ping checks that the database answers. It returns ErrUnavailable, wrapped,
// when it does not.
func (s *Store) Ping(ctx context.Context) error {
	return classify(ctx, s.db.PingContext(ctx))
}

// Close closes the connection pool.
func (s *Store) Close() error { return s.db.Close() }
