package server

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// customerLimiter is a token bucket per customer (golang.org/x/time/rate),
// in the memory of one replica: with R replicas behind a load balancer a
// customer gets up to R times the rate. The map of buckets is bounded two
// ways. A bucket untouched for burst/rate is full again, exactly like a new
// one, so forgetting it changes nothing; those are dropped as calls come
// in. And at most maxCustomers buckets are kept: beyond that the least
// recently used is dropped even if not yet full, which can only let that
// customer through sooner, never later.
type customerLimiter struct {
	limit        rate.Limit
	burst        int
	maxCustomers int
	// refill is how long an emptied bucket takes to fill up: burst/rate.
	refill time.Duration
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
}

type bucket struct {
	customer string
	lim      *rate.Limiter
	last     time.Time
}

// newCustomerLimiter returns a limiter of perSecond tokens a second with
// bursts of burst, or nil (no limit) when perSecond is not positive.
func newCustomerLimiter(perSecond float64, burst, maxCustomers int, now func() time.Time) *customerLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &customerLimiter{
		limit:        rate.Limit(perSecond),
		burst:        max(burst, 1),
		maxCustomers: max(maxCustomers, 1),
		refill:       time.Duration(float64(max(burst, 1)) / perSecond * float64(time.Second)),
		now:          now,
		buckets:      map[string]*list.Element{},
	}
}

// allow takes a token from the customer's bucket. When the bucket is empty
// it returns false and how long until a token is there (rounded up to the
// millisecond, the unit of the grpc-retry-pushback-ms trailer).
func (l *customerLimiter) allow(customer string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.lru.Back(); e != nil && now.Sub(e.Value.(*bucket).last) >= l.refill; e = l.lru.Back() {
		l.remove(e)
	}
	e, ok := l.buckets[customer]
	if ok {
		l.lru.MoveToFront(e)
	} else {
		if l.lru.Len() >= l.maxCustomers {
			l.remove(l.lru.Back())
		}
		e = l.lru.PushFront(&bucket{customer: customer, lim: rate.NewLimiter(l.limit, l.burst)})
		l.buckets[customer] = e
	}
	b := e.Value.(*bucket)
	b.last = now
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	wait := time.Duration((1 - b.lim.TokensAt(now)) / float64(l.limit) * float64(time.Second))
	return false, max((wait + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
}

func (l *customerLimiter) remove(e *list.Element) {
	delete(l.buckets, e.Value.(*bucket).customer)
	l.lru.Remove(e)
}

// size is how many customers' buckets are kept.
func (l *customerLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
