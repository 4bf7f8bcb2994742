package store

import (
	"context"
	"fmt"
	"time"
)

const (
	purgeTokens   = `DELETE FROM tokens WHERE expire_time < ? ORDER BY expire_time LIMIT ?`
	purgeOutcomes = `DELETE FROM outcomes WHERE create_time < ? ORDER BY create_time LIMIT ?`
)

// PurgeResult counts what one Purge deleted.
type PurgeResult struct {
	Tokens   int64
	Outcomes int64
}

// Purge deletes unused tokens that expired before tokensBefore and stored
// outcomes recorded before outcomesBefore, in batches of at most batch rows
// (each its own short transaction), until none is left or ctx ends. Several
// replicas may run it at once: each row is deleted by one of them.
//
// batch below 1 is ErrInvalidRequest.
//
// Once an outcome is purged, its token answers ErrTokenNotFound; the order
// itself stays, and its UNIQUE token hash still prevents a second order.
func (s *Store) Purge(ctx context.Context, tokensBefore, outcomesBefore time.Time, batch int) (PurgeResult, error) {
	var res PurgeResult
	if batch < 1 {
		return res, withDetail(ErrInvalidRequest, "batch", fmt.Sprint(batch))
	}
	for _, p := range []struct {
		query  string
		before time.Time
		n      *int64
	}{{purgeTokens, tokensBefore, &res.Tokens}, {purgeOutcomes, outcomesBefore, &res.Outcomes}} {
		for {
			r, err := s.db.ExecContext(ctx, p.query, p.before.UTC(), batch)
			if err != nil {
				return res, fmt.Errorf("purge: %w", classify(ctx, err))
			}
			n, err := r.RowsAffected()
			if err != nil {
				return res, fmt.Errorf("purge: %w", err)
			}
			*p.n += n
			if n < int64(batch) {
				break
			}
		}
	}
	return res, nil
}
