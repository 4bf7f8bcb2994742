package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// fillChunk is how many orders (or tokens) one INSERT … SELECT writes.
const fillChunk = 100_000

// The growth fill writes what orderd would have written for past orders,
// generated in SQL from a 1,000-row digits table (portable to MySQL 8 and
// MariaDB; no sequence engine). Row n of a chunk starting at ? is
// ? + a.n*1000 + b.n. Order ids sort before every real UUIDv7 (as older
// orders do), token hashes are SHA-256 like real ones (random positions in
// the unique indexes), create times go back one second per order.
const (
	fillNumbers = `SELECT ? + a.n * 1000 + b.n AS n FROM bench_digits a CROSS JOIN bench_digits b WHERE a.n < 100`
	// g: n, the two product indexes of the order, its id and create time.
	fillOrderRows = `SELECT x.n, (x.n * 7) MOD ? AS i1, (x.n * 7 + 1) MOD ? AS i2,
    CONCAT('00000000-0000-7000-8000-', LPAD(HEX(x.n), 12, '0')) AS id,
    CONCAT('growth-', x.n MOD 10000) AS cust,
    DATE_SUB(?, INTERVAL x.n SECOND) AS ct
  FROM (` + fillNumbers + `) x WHERE x.n < ?`
	fillOrders = `INSERT INTO orders (id, customer_id, token_hash, total_minor, currency, status, create_time)
SELECT g.id, g.cust, UNHEX(SHA2(CONCAT('growth-order-', g.n), 256)),
  200 + g.i1 MOD 900 + g.i2 MOD 900, 'EUR', 1, g.ct
FROM (` + fillOrderRows + `) g`
	fillLines = `INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor, line_total_minor)
SELECT g.id, l.no, CONCAT('bench-', LPAD(IF(l.no = 1, g.i1, g.i2), 5, '0')), 1,
  100 + IF(l.no = 1, g.i1, g.i2) MOD 900, 100 + IF(l.no = 1, g.i1, g.i2) MOD 900
FROM (` + fillOrderRows + `) g CROSS JOIN (SELECT 1 AS no UNION ALL SELECT 2) l`
	// The body is the JSON orderd stores (store.outcomeBody of the order).
	fillOutcomes = `INSERT INTO outcomes (token_hash, customer_id, request_hash, order_id, rejection, body, create_time)
SELECT UNHEX(SHA2(CONCAT('growth-order-', g.n), 256)), g.cust, UNHEX(SHA2(CONCAT('growth-request-', g.n), 256)), g.id, NULL,
  CONCAT('{"order":{"id":"', g.id, '","customer_id":"', g.cust,
    '","lines":[{"sku":"bench-', LPAD(g.i1, 5, '0'), '","quantity":1,"unit_price_minor":', 100 + g.i1 MOD 900, ',"line_total_minor":', 100 + g.i1 MOD 900,
    '},{"sku":"bench-', LPAD(g.i2, 5, '0'), '","quantity":1,"unit_price_minor":', 100 + g.i2 MOD 900, ',"line_total_minor":', 100 + g.i2 MOD 900,
    '}],"total_minor":', 200 + g.i1 MOD 900 + g.i2 MOD 900, ',"currency":"EUR","status":1,"create_time":"', DATE_FORMAT(g.ct, '%Y-%m-%dT%H:%i:%s.%fZ'), '"}}'),
  g.ct
FROM (` + fillOrderRows + `) g`
	// Expired at least an hour ago, so past any -expired-token-grace the
	// janitor phase uses (0) and the default (1h).
	fillTokens = `INSERT INTO tokens (token_hash, customer_id, issue_time, expire_time)
SELECT UNHEX(SHA2(CONCAT('growth-token-', x.n), 256)), CONCAT('growth-', x.n MOD 10000),
  DATE_SUB(?, INTERVAL (x.n + 7201) SECOND), DATE_SUB(?, INTERVAL (x.n + 3601) SECOND)
FROM (` + fillNumbers + `) x WHERE x.n < ?`
)

// fill pre-fills the growth backlog: orders with lines and outcomes, and
// expired unused tokens.
func (b *bench) fill(ctx context.Context, orders, tokens int) error {
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS bench_digits (n SMALLINT NOT NULL, PRIMARY KEY (n)) ENGINE=InnoDB"); err != nil {
		return fmt.Errorf("digits table: %w", err)
	}
	var digits strings.Builder
	digits.WriteString("INSERT IGNORE INTO bench_digits (n) VALUES ")
	for i := range 1000 {
		if i > 0 {
			digits.WriteString(", ")
		}
		fmt.Fprintf(&digits, "(%d)", i)
	}
	if _, err := conn.ExecContext(ctx, digits.String()); err != nil {
		return fmt.Errorf("digits table: %w", err)
	}
	// The rows are unique by construction: skip the unique checks' reads.
	if _, err := conn.ExecContext(ctx, "SET SESSION unique_checks = 0"); err != nil {
		return err
	}
	defer conn.ExecContext(context.Background(), "SET SESSION unique_checks = 1")
	now := time.Now().UTC().Truncate(time.Microsecond)
	p := len(b.skus)
	for start := 0; start < orders; start += fillChunk {
		rowArgs := []any{p, p, now, start, orders}
		for _, q := range []struct{ name, sql string }{{"orders", fillOrders}, {"order lines", fillLines}, {"outcomes", fillOutcomes}} {
			if err := execTx(ctx, conn, q.sql, rowArgs...); err != nil {
				return fmt.Errorf("fill %s: %w", q.name, err)
			}
		}
		b.logf("growth fill: %d / %d orders", min(orders, start+fillChunk), orders)
	}
	for start := 0; start < tokens; start += fillChunk {
		if err := execTx(ctx, conn, fillTokens, now, now, start, tokens); err != nil {
			return fmt.Errorf("fill tokens: %w", err)
		}
	}
	return nil
}

// execTx runs one statement in its own transaction on conn.
func execTx(ctx context.Context, conn *sql.Conn, q string, args ...any) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// growth pre-fills the tables, reruns flow, and reruns it again with
// orderd's janitor purging the expired tokens.
func (b *bench) growth(ctx context.Context) error {
	c := b.cfg.GrowthConc
	g := &Growth{Concurrency: c, Orders: b.cfg.GrowthOrders, Tokens: b.cfg.GrowthTokens}
	b.rep.Growth = g
	// The baseline runs just before the fill, on a fresh orderd like the
	// runs after it, so that the ratio compares table sizes, not moments.
	if err := b.startOrderd(ctx, false); err != nil {
		return err
	}
	r, err := b.measure(ctx, "flow-small", c, c, b.flowOp)
	if err != nil {
		return err
	}
	g.Empty = r
	if err := b.tableRows(ctx, &g.RowsBefore); err != nil {
		return err
	}
	b.logf("growth fill: %d orders with lines and outcomes, %d expired tokens", g.Orders, g.Tokens)
	t0 := time.Now()
	if err := b.fill(ctx, g.Orders, g.Tokens); err != nil {
		return err
	}
	g.FillSec = time.Since(t0).Seconds()
	b.logf("growth fill took %.1fs", g.FillSec)
	if g.DirtyPagesAfterFill, g.SettleSec, err = b.settle(ctx); err != nil {
		return err
	}
	b.logf("flushed %d dirty pages in %.1fs", g.DirtyPagesAfterFill, g.SettleSec)
	if err := b.tableRows(ctx, &g.RowsAfter); err != nil {
		return err
	}

	// Fresh orderd (janitor off), as for the janitor run below.
	if err := b.startOrderd(ctx, false); err != nil {
		return err
	}
	r, err = b.measure(ctx, "flow-grown", c, c, b.flowOp)
	if err != nil {
		return err
	}
	g.Grown = r
	g.GrownThroughputRatio = ratio(r.Throughput, g.Empty.Throughput)
	g.GrownP99Ratio = ratio(r.P99Ms, g.Empty.P99Ms)

	if g.ExpiredBefore, err = b.expiredTokens(ctx); err != nil {
		return err
	}
	if err := b.startOrderd(ctx, true); err != nil {
		return err
	}
	janitorStart := time.Now()
	r, err = b.measure(ctx, "flow-janitor", c, c, b.flowOp)
	if err != nil {
		return err
	}
	g.Janitor = r
	g.JanitorThroughputRatio = ratio(r.Throughput, g.Grown.Throughput)
	g.JanitorP99Ratio = ratio(r.P99Ms, g.Grown.P99Ms)
	// The janitor counts every batch, so the metric shows its progress;
	// at its default pace the backlog outlasts the run.
	if g.JanitorDeletedMetric, err = b.od.metric(ctx, "orderd_janitor_deleted_total", `table="tokens"`); err != nil {
		return fmt.Errorf("janitor metric: %w", err)
	}
	if g.ExpiredAfter, err = b.expiredTokens(ctx); err != nil {
		return err
	}
	if sec := time.Since(janitorStart).Seconds(); sec > 0 {
		g.PurgeRowsPerSec = float64(g.ExpiredBefore-g.ExpiredAfter) / sec
	}
	return b.stopOrderd()
}

// settle waits (at most a minute) until InnoDB has flushed the fill's
// dirty pages, so that the runs after the fill do not pay for it. On the
// private server it makes the page cleaner flush at full speed meanwhile.
func (b *bench) settle(ctx context.Context) (dirty int64, took float64, err error) {
	t0 := time.Now()
	read := func() (int64, error) {
		var name string
		var n int64
		err := b.db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &n)
		return n, err
	}
	if dirty, err = read(); err != nil {
		return 0, 0, err
	}
	if b.pdb != nil {
		var pct string
		if err := b.admin.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct").Scan(&pct); err != nil {
			return 0, 0, err
		}
		if _, err := b.admin.ExecContext(ctx, "SET GLOBAL innodb_max_dirty_pages_pct = 0"); err != nil {
			return 0, 0, err
		}
		defer b.admin.ExecContext(context.WithoutCancel(ctx), "SET GLOBAL innodb_max_dirty_pages_pct = "+pct)
	}
	for n := dirty; n > 500 && time.Since(t0) < time.Minute; {
		time.Sleep(500 * time.Millisecond)
		if n, err = read(); err != nil {
			return 0, 0, err
		}
	}
	return dirty, time.Since(t0).Seconds(), nil
}

// expiredTokens counts the tokens whose expiry has passed.
func (b *bench) expiredTokens(ctx context.Context) (int64, error) {
	var n int64
	err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM tokens WHERE expire_time < UTC_TIMESTAMP(6)").Scan(&n)
	return n, err
}

// tableRows counts the rows of orderd's tables.
func (b *bench) tableRows(ctx context.Context, into *map[string]int64) error {
	*into = map[string]int64{}
	for _, t := range []string{"orders", "order_lines", "outcomes", "tokens"} {
		var n int64
		if err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n); err != nil {
			return fmt.Errorf("count %s: %w", t, err)
		}
		(*into)[t] = n
	}
	return nil
}

func ratio(a, b float64) *float64 {
	if b == 0 {
		return nil
	}
	return ptr(a / b)
}
