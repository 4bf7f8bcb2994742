package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	// Applied is when it was applied; zero if pending.
	Applied time.Time
}

type migration struct {
	Migration
	statements []string
}

func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and '_'", base)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var stmts []string
		for _, s := range strings.Split(string(b), ";\n") {
			if strings.TrimSpace(stripComments(s)) != "" {
				stmts = append(stmts, s)
			}
		}
		ms = append(ms, migration{Migration: Migration{Version: v, Name: base}, statements: stmts})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

const (
	createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INT          NOT NULL PRIMARY KEY,
  name       VARCHAR(200) NOT NULL,
  applied_at DATETIME(6)  NOT NULL
) ENGINE=InnoDB`
	migrateLockName = "orderd.migrate"
)

// Migrate applies the pending migrations embedded in the binary, in order,
// and returns the ones it applied. Replicas starting together are
// serialised with a named lock (GET_LOCK), so each migration runs once.
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) {
	ms, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", classify(ctx, err))
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", migrateLockName).Scan(&got); err != nil || got.Int64 != 1 {
		return nil, fmt.Errorf("migrate: take lock %s: %v", migrateLockName, classify(ctx, err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", migrateLockName)

	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("migrate: %w", classify(ctx, err))
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	var done []Migration
	for _, m := range ms {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		for _, stmt := range m.statements {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return done, fmt.Errorf("migrate %s: %w", m.Name, classify(ctx, err))
			}
		}
		m.Applied = s.opts.Now().UTC()
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", m.Version, m.Name, m.Applied); err != nil {
			return done, fmt.Errorf("migrate %s: record: %w", m.Name, classify(ctx, err))
		}
		done = append(done, m.Migration)
	}
	return done, nil
}

// MigrationStatus lists every embedded migration with when it was applied
// (zero Applied: pending).
func (s *Store) MigrationStatus(ctx context.Context) ([]Migration, error) {
	ms, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", classify(ctx, err))
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("migration status: %w", classify(ctx, err))
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	out := make([]Migration, len(ms))
	for i, m := range ms {
		out[i] = m.Migration
		out[i].Applied = applied[m.Version]
	}
	return out, nil
}

func appliedMigrations(ctx context.Context, conn *sql.Conn) (map[int]time.Time, error) {
	rows, err := conn.QueryContext(ctx, "SELECT version, applied_at FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", classify(ctx, err))
	}
	defer rows.Close()
	applied := map[int]time.Time{}
	for rows.Next() {
		var v int
		var at time.Time
		if err := rows.Scan(&v, &at); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[v] = at
	}
	return applied, rows.Err()
}
