package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc/status"
)

// errExhausted stops a worker whose scenario has run out of pre-issued
// tokens; the measurement window then ends early.
var errExhausted = errors.New("pre-issued tokens exhausted")

// worker is one closed-loop caller. An op records into its worker only.
type worker struct {
	id  int
	rng *rand.Rand
	// sub collects per-call samples of an op made of several calls (storm,
	// naive); when an op records none, the op's own latency is the sample.
	sub    []time.Duration
	subErr []error
	// dups counts duplicates an op detected (storm, naive); wrong counts
	// definitive rejections of calls whose token another call turned into
	// an order (storm).
	dups, wrong int
}

// op is one unit of a scenario: one order (flow, place, raw) or one token
// or key under a storm of callers. A nil error means it produced its order.
type op func(ctx context.Context, w *worker) error

// tally is what a load run measured.
type tally struct {
	// window is the measured interval: warm-up end to the end (or to the
	// moment the tokens ran out).
	window time.Duration
	// ops counts ops started in the window that succeeded; allOps counts
	// every successful op, warm-up and tail included (the denominator of
	// per-op costs measured around the whole run).
	ops, allOps int
	lat         []time.Duration
	errs        map[string]int
	firstErr    map[string]string
	dups, wrong int
	exhausted   bool
}

// runLoad runs op in c closed-loop workers for warmup + d. Ops that start in
// the last d are measured.
func runLoad(ctx context.Context, c int, warmup, d time.Duration, fn op) *tally {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(d)
	var (
		mu          sync.Mutex
		total       = &tally{errs: map[string]int{}, firstErr: map[string]string{}}
		exhaustedAt atomic.Int64
		wg          sync.WaitGroup
	)
	for i := range c {
		wg.Go(func() {
			w := &worker{id: i, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))}
			local := &tally{errs: map[string]int{}, firstErr: map[string]string{}}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) || exhaustedAt.Load() != 0 {
					break
				}
				measured := !t0.Before(measureFrom)
				w.sub, w.subErr, w.dups, w.wrong = w.sub[:0], w.subErr[:0], 0, 0
				err := fn(ctx, w)
				lat := time.Since(t0)
				if errors.Is(err, errExhausted) {
					exhaustedAt.CompareAndSwap(0, t0.UnixNano())
					break
				}
				if err == nil {
					local.allOps++
				}
				if !measured {
					continue
				}
				local.dups += w.dups
				local.wrong += w.wrong
				if len(w.sub) > 0 || len(w.subErr) > 0 {
					local.lat = append(local.lat, w.sub...)
					for _, e := range w.subErr {
						local.addErr(e)
					}
				} else if err == nil {
					local.lat = append(local.lat, lat)
				}
				if err == nil {
					local.ops++
				} else if len(w.subErr) == 0 {
					local.addErr(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			total.ops += local.ops
			total.allOps += local.allOps
			total.dups += local.dups
			total.wrong += local.wrong
			total.lat = append(total.lat, local.lat...)
			for k, v := range local.errs {
				total.errs[k] += v
				if _, ok := total.firstErr[k]; !ok {
					total.firstErr[k] = local.firstErr[k]
				}
			}
		})
	}
	wg.Wait()
	total.window = d
	if at := exhaustedAt.Load(); at != 0 {
		total.exhausted = true
		total.window = max(time.Unix(0, at).Sub(measureFrom), time.Millisecond)
	}
	slices.Sort(total.lat)
	return total
}

func (t *tally) addErr(err error) {
	k := errorKey(err)
	t.errs[k]++
	if _, ok := t.firstErr[k]; !ok {
		t.firstErr[k] = err.Error()
	}
}

// errorKey classifies an error: its gRPC code, its MySQL error number, or
// a client-side label.
func errorKey(err error) string {
	var me *mysql.MySQLError
	var be benchError
	switch {
	case errors.As(err, &be):
		return string(be)
	case errors.As(err, &me):
		return fmt.Sprintf("MYSQL_%d", me.Number)
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	return "OTHER"
}

// benchError is a failure the benchmark detects in an answer that the
// transport reported as a success, such as an unexpected replay.
type benchError string

func (e benchError) Error() string { return string(e) }

// percentile returns the q-quantile (0 < q <= 1) of sorted latencies, by
// the nearest-rank method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// tokenPool hands out pre-issued tokens to workers.
type tokenPool struct {
	toks []poolToken
	next atomic.Int64
}

type poolToken struct {
	token    string
	hash     []byte
	customer string
}

func (p *tokenPool) take() (poolToken, bool) {
	i := p.next.Add(1) - 1
	if i >= int64(len(p.toks)) {
		return poolToken{}, false
	}
	return p.toks[i], true
}

// unused returns the tokens nobody took.
func (p *tokenPool) unused() []poolToken {
	i := min(int(p.next.Load()), len(p.toks))
	return p.toks[i:]
}
