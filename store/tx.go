package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math/rand/v2"
	"time"
)

// tx is a transaction on one pooled connection that saves round trips:
// START TRANSACTION travels with its first statement and, through
// ExecCommit, COMMIT with its last (multi-statement queries, which Open
// enables). PlaceOrder is then 3 round trips: START TRANSACTION + outcome
// claim + DELETE token; SELECT … FOR UPDATE; the writes + COMMIT.
//
// database/sql's Tx sends BEGIN and COMMIT as round trips of their own,
// which is why tx manages the transaction itself. Its rule: a connection
// goes back to the pool only after COMMIT or ROLLBACK succeeded, or is
// discarded, so that no transaction outlives the call (the next START
// TRANSACTION on that connection would commit it implicitly).
type tx struct {
	conn      *sql.Conn
	begun     bool // START TRANSACTION was sent
	committed bool
}

// begin returns q with START TRANSACTION in front when it is the first
// statement.
func (t *tx) begin(q string) string {
	if t.begun {
		return q
	}
	t.begun = true
	return "START TRANSACTION; " + q
}

// ExecContext runs a statement (or several, separated by ";") in the
// transaction. Its result's RowsAffected is the last statement's.
func (t *tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.conn.ExecContext(ctx, t.begin(q), args...)
}

// ExecCommit runs q and commits in the same round trip. The server stops
// at the first failing statement, so on error nothing was committed unless
// the connection failed during COMMIT itself (then the outcome is unknown,
// as with any lost COMMIT).
func (t *tx) ExecCommit(ctx context.Context, q string, args ...any) error {
	if _, err := t.conn.ExecContext(ctx, t.begin(q)+"; COMMIT", args...); err != nil {
		return err
	}
	t.committed = true
	return nil
}

// QueryContext runs a query in the transaction. A result set cannot follow
// START TRANSACTION in the same round trip here, so a transaction that
// starts with a query begins with a round trip of its own.
func (t *tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if err := t.start(ctx); err != nil {
		return nil, err
	}
	return t.conn.QueryContext(ctx, q, args...)
}

// scanRow runs a query for at most one row and scans it into dest; no row
// is sql.ErrNoRows.
func (t *tx) scanRow(ctx context.Context, q string, args []any, dest ...any) error {
	if err := t.start(ctx); err != nil {
		return err
	}
	return t.conn.QueryRowContext(ctx, q, args...).Scan(dest...)
}

func (t *tx) start(ctx context.Context) error {
	if t.begun {
		return nil
	}
	t.begun = true
	_, err := t.conn.ExecContext(ctx, "START TRANSACTION")
	return err
}

// inTx runs fn in a transaction and commits it (unless fn committed with
// ExecCommit). Deadlocks and lock wait timeouts roll back and rerun the
// whole transaction, with jittered backoff, up to Options.TxAttempts times;
// then the error is ErrContention. fn must be safe to rerun. A panic in fn
// rolls back and is re-raised.
//
// This is the store's one transaction helper.
func (s *Store) inTx(ctx context.Context, fn func(*tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, fn)
		cause := retryCause(err)
		if cause == "" || attempt >= s.opts.TxAttempts || ctx.Err() != nil {
			return classify(ctx, err)
		}
		s.opts.OnRetry(cause)
		// Full jitter over an exponential ceiling: 5ms, 10ms, 20ms, …
		ceiling := (5 * time.Millisecond) << (attempt - 1)
		t := time.NewTimer(rand.N(ceiling) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return classify(ctx, err)
		case <-t.C:
		}
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(*tx) error) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t := &tx{conn: conn}
	defer func() {
		p := recover()
		if (err != nil || p != nil) && t.begun && !t.committed {
			// Explicit: a lock wait timeout rolls back only the
			// statement. The ROLLBACK must run even when ctx has
			// ended, or the connection must not be reused.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, rerr := conn.ExecContext(rctx, "ROLLBACK"); rerr != nil {
				discard(conn)
			}
			cancel()
		}
		conn.Close()
		if p != nil {
			panic(p)
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if t.begun && !t.committed {
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			discard(conn)
			return fmt.Errorf("commit: %w", err)
		}
		t.committed = true
	}
	return nil
}

// discard makes the pool close conn instead of reusing it.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}
