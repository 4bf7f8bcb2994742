package store

import (
	"context"
	"fmt"
	"math"
	"time"
)

const (
	purgeTokens   = `DELETE FROM tokens WHERE expire_time < ? ORDER BY expire_time LIMIT ?`
	purgeOutcomes = `DELETE FROM outcomes WHERE create_time < ? ORDER BY create_time LIMIT ?`
)

// PurgeResult counts what a purge, or one batch of it, deleted.
type PurgeResult struct {
	Tokens   int64
	Outcomes int64
}

// PurgeOptions says what Purge deletes and how fast.
type PurgeOptions struct {
	// TokensBefore: unused tokens that expired before it are deleted.
	TokensBefore time.Time
	// OutcomesBefore: stored outcomes recorded before it are deleted.
	OutcomesBefore time.Time
	// Batch is the most rows one DELETE removes; below 1 is
	// ErrInvalidRequest.
	Batch int
	// RowsPerSecond paces the purge: after a batch that deleted n rows in d,
	// the next batch waits n/RowsPerSecond − d (if positive). 0 runs the
	// batches back to back; negative or NaN is ErrInvalidRequest. The rate
	// is per caller: replicas purging at once add up. d is measured with
	// Options.Now.
	RowsPerSecond float64
	// OnBatch, if set, is called after every batch that deleted rows, with
	// that batch's counts (before any pause), so progress shows while a large
	// backlog is purged.
	OnBatch func(PurgeResult)
	// Sleep, if set, replaces the pause between batches: it must wait d, or
	// until ctx ends, and return ctx's error if it ended. The purge stops
	// with the error Sleep returns. It is only called with d > 0. Tests use
	// it to see the pauses without waiting for them.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Purge deletes unused tokens that expired before opts.TokensBefore, then
// stored outcomes recorded before opts.OutcomesBefore, in batches of at most
// opts.Batch rows (each its own short statement, so its own transaction),
// paced to opts.RowsPerSecond, until none is left or ctx ends. A batch
// that deletes fewer than opts.Batch rows ends its table's pass. Several
// replicas may run it at once: each row is deleted by one of them.
//
// It returns what it deleted, also when it stops early with an error (ctx
// ending during a batch or a pause, or a failed DELETE).
//
// Once an outcome is purged, its token answers ErrTokenNotFound; the order
// itself stays, and its UNIQUE token hash still prevents a second order.
func (s *Store) Purge(ctx context.Context, opts PurgeOptions) (PurgeResult, error) {
	var res PurgeResult
	if opts.Batch < 1 {
		return res, withDetail(ErrInvalidRequest, "batch", fmt.Sprint(opts.Batch))
	}
	if !(opts.RowsPerSecond >= 0) {
		return res, withDetail(ErrInvalidRequest, "rows_per_second", fmt.Sprint(opts.RowsPerSecond))
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = sleepContext
	}
	var pause time.Duration // owed by the previous batch, taken before the next
	for _, p := range []struct {
		query  string
		before time.Time
		n      *int64
		one    func(int64) PurgeResult
	}{
		{purgeTokens, opts.TokensBefore, &res.Tokens, func(n int64) PurgeResult { return PurgeResult{Tokens: n} }},
		{purgeOutcomes, opts.OutcomesBefore, &res.Outcomes, func(n int64) PurgeResult { return PurgeResult{Outcomes: n} }},
	} {
		for {
			if pause > 0 {
				if err := sleep(ctx, pause); err != nil {
					return res, fmt.Errorf("purge: %w", err)
				}
			}
			start := s.opts.Now()
			r, err := s.db.ExecContext(ctx, p.query, p.before.UTC(), opts.Batch)
			if err != nil {
				return res, fmt.Errorf("purge: %w", classify(ctx, err))
			}
			n, err := r.RowsAffected()
			if err != nil {
				return res, fmt.Errorf("purge: %w", err)
			}
			pause = purgePause(n, opts.RowsPerSecond, s.opts.Now().Sub(start))
			*p.n += n
			if n > 0 && opts.OnBatch != nil {
				opts.OnBatch(p.one(n))
			}
			if n < int64(opts.Batch) {
				break
			}
		}
	}
	return res, nil
}

// purgePause is how long to wait after a batch that deleted n rows in took
// to keep to rate rows per second (0: unpaced).
func purgePause(n int64, rate float64, took time.Duration) time.Duration {
	if rate == 0 || n == 0 {
		return 0
	}
	want := math.Round(float64(n) * float64(time.Second) / rate)
	if want >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(want) - max(took, 0)
}

// sleepContext waits d or until ctx ends, and then returns ctx's error.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
