package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// repoRoot walks up from the working directory to the directory of go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run orderbench inside the orderd repository")
		}
		dir = parent
	}
}

// sourceVersion describes the working tree orderd is built from (read-only
// git commands): HEAD and how many files differ from it.
func sourceVersion(root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	head, err := git("rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown (no git)"
	}
	st, err := git("status", "--porcelain")
	if err != nil || st == "" {
		return "git " + head
	}
	return fmt.Sprintf("git %s with %d changed or untracked files", head, len(strings.Split(st, "\n")))
}

// privateDB is the MariaDB orderbench started with scripts/mysql-private.
type privateDB struct {
	root, dir string
}

const benchDatabase = "orderbench"

// startPrivateDB starts (or reuses) the private server and returns it and
// the DSN of its orderbench database.
func startPrivateDB(ctx context.Context, root string, port int, bufferPool string) (*privateDB, string, error) {
	p := &privateDB{root: root, dir: filepath.Join(root, ".data", "bench-mysql")}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "mysql-private"), "start", p.dir, strconv.Itoa(port), benchDatabase)
	opts := strings.TrimSpace(os.Getenv("ORDERD_PRIVATE_MYSQL_OPTS") + " --innodb-buffer-pool-size=" + bufferPool)
	cmd.Env = append(os.Environ(), "ORDERD_PRIVATE_MYSQL_OPTS="+opts)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("scripts/mysql-private start: %w\n%s", err, stderr.String())
	}
	return p, strings.TrimSpace(string(out)), nil
}

// pid returns the server's process id, 0 if unknown.
func (p *privateDB) pid() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "mysqld.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func (p *privateDB) stop() error {
	cmd := exec.Command(filepath.Join(p.root, "scripts", "mysql-private"), "stop", p.dir)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/mysql-private stop: %w\n%s", err, out)
	}
	return nil
}

// openServer opens a small pool on dsn's server without a database.
func openServer(dsn string) (*sql.DB, string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("parse DSN: %w", err)
	}
	name := cfg.DBName
	cfg.DBName = ""
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, "", err
	}
	db.SetMaxOpenConns(4)
	return db, name, nil
}

// databaseInfo reads the server version and its durability settings.
func databaseInfo(ctx context.Context, db *sql.DB, m *Machine) error {
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.DBVersion); err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	for _, v := range []struct {
		name string
		dst  *string
	}{
		{"innodb_flush_log_at_trx_commit", &m.FlushLogAtTrxCommit},
		{"sync_binlog", &m.SyncBinlog},
		{"log_bin", &m.LogBin},
		{"innodb_buffer_pool_size", &m.BufferPoolBytes},
		{"innodb_doublewrite", &m.Doublewrite},
	} {
		var s sql.NullString
		if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL."+v.name).Scan(&s); err != nil {
			*v.dst = "unknown (" + err.Error() + ")"
			continue
		}
		*v.dst = s.String
	}
	return nil
}

// statusCounters returns the server's Questions and Com_* counters.
func statusCounters(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, `SHOW GLOBAL STATUS WHERE Variable_name = 'Questions' OR Variable_name LIKE 'Com\_%'`)
	if err != nil {
		return nil, fmt.Errorf("global status: %w", err)
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, err
		}
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			m[strings.ToLower(name)] = n
		}
	}
	return m, rows.Err()
}

// skuName is the SKU of seeded product i. The growth fill builds the same
// names in SQL: keep them in step.
func skuName(i int) string { return fmt.Sprintf("bench-%05d", i) }

// seedProducts creates n products with a stock no benchmark exhausts.
func seedProducts(ctx context.Context, db *sql.DB, n int) ([]string, error) {
	skus := make([]string, n)
	now := time.Now().UTC()
	for start := 0; start < n; start += 500 {
		end := min(n, start+500)
		var q strings.Builder
		q.WriteString("INSERT INTO products (sku, name, unit_price_minor, currency, stock, update_time) VALUES ")
		args := make([]any, 0, 6*(end-start))
		for i := start; i < end; i++ {
			skus[i] = skuName(i)
			if i > start {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, skus[i], "Benchmark product "+strconv.Itoa(i), 100+i%900, "EUR", int64(1e15), now)
		}
		q.WriteString(" ON DUPLICATE KEY UPDATE unit_price_minor = VALUES(unit_price_minor), currency = VALUES(currency), stock = VALUES(stock)")
		if _, err := db.ExecContext(ctx, q.String(), args...); err != nil {
			return nil, fmt.Errorf("seed products: %w", err)
		}
	}
	return skus, nil
}

// createNaive is the naive baseline's table: an order per request key,
// deduplicated by checking first. request_key has an index (else every
// check scans the table) but no UNIQUE constraint.
const createNaive = `CREATE TABLE IF NOT EXISTS naive_orders (
  id          BIGINT      NOT NULL AUTO_INCREMENT,
  request_key VARCHAR(64) NOT NULL,
  customer_id VARCHAR(64) NOT NULL,
  total_minor BIGINT      NOT NULL,
  create_time DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY naive_orders_key (request_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`
