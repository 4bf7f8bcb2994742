package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/orderd/orderd/store"
)

// Purger deletes expired tokens and old outcomes in paced batches;
// *store.Store implements it.
type Purger interface {
	Purge(ctx context.Context, opts store.PurgeOptions) (store.PurgeResult, error)
}

// JanitorOptions configures RunJanitor.
type JanitorOptions struct {
	// Interval between purges; the janitor does not run when it is <= 0.
	Interval time.Duration
	// Batch is the most rows one DELETE removes.
	Batch int
	// RowsPerSecond paces each purge (see store.PurgeOptions.RowsPerSecond);
	// 0 deletes back to back.
	RowsPerSecond float64
	// TokenGrace keeps expired unused tokens this long, so GetToken and
	// PlaceOrder can still tell EXPIRED from NOT_FOUND.
	TokenGrace time.Duration
	// OutcomeRetention keeps stored outcomes, and so replays, this long.
	OutcomeRetention time.Duration
	// OnPurge, if set, is told what each batch deleted, right after the
	// batch, so that a long purge shows progress.
	OnPurge func(store.PurgeResult)
	// Sleep, if set, replaces the pause between batches (see
	// store.PurgeOptions.Sleep); for tests.
	Sleep func(ctx context.Context, d time.Duration) error
}

// RunJanitor purges on every interval until ctx ends, and logs the totals of
// each purge. It is safe to run in every replica: each row is deleted once,
// in short batches. A purge that outlasts the interval is followed by the
// next one right away.
func RunJanitor(ctx context.Context, p Purger, opts JanitorOptions, log *slog.Logger) {
	if opts.Interval <= 0 {
		return
	}
	t := time.NewTicker(opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		res, err := p.Purge(ctx, store.PurgeOptions{
			TokensBefore: now.Add(-opts.TokenGrace), OutcomesBefore: now.Add(-opts.OutcomeRetention),
			Batch: opts.Batch, RowsPerSecond: opts.RowsPerSecond, OnBatch: opts.OnPurge, Sleep: opts.Sleep,
		})
		if res.Tokens > 0 || res.Outcomes > 0 {
			log.InfoContext(ctx, "janitor purged", "tokens", res.Tokens, "outcomes", res.Outcomes, "took", time.Since(now).Round(time.Millisecond))
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.WarnContext(ctx, "janitor purge failed", "err", err)
		}
	}
}
