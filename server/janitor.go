package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/orderd/orderd/store"
)

// Purger deletes expired tokens and old outcomes; *store.Store implements it.
type Purger interface {
	Purge(ctx context.Context, tokensBefore, outcomesBefore time.Time, batch int) (store.PurgeResult, error)
}

// JanitorOptions configures RunJanitor.
type JanitorOptions struct {
	// Interval between purges; the janitor does not run when it is <= 0.
	Interval time.Duration
	// Batch is the most rows one DELETE removes.
	Batch int
	// TokenGrace keeps expired unused tokens this long, so GetToken and
	// PlaceOrder can still tell EXPIRED from NOT_FOUND.
	TokenGrace time.Duration
	// OutcomeRetention keeps stored outcomes, and so replays, this long.
	OutcomeRetention time.Duration
	// OnPurge, if set, is told what each purge deleted.
	OnPurge func(store.PurgeResult)
}

// RunJanitor purges on every interval until ctx ends. It is safe to run in
// every replica: each row is deleted once, in short batches.
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
		res, err := p.Purge(ctx, now.Add(-opts.TokenGrace), now.Add(-opts.OutcomeRetention), opts.Batch)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.WarnContext(ctx, "janitor purge failed", "err", err)
		}
		if res.Tokens > 0 || res.Outcomes > 0 {
			log.InfoContext(ctx, "janitor purged", "tokens", res.Tokens, "outcomes", res.Outcomes)
		}
		if opts.OnPurge != nil {
			opts.OnPurge(res)
		}
	}
}
