package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderd/orderd/store/storetest"
)

func TestCustomerLimiter(t *testing.T) {
	clk := storetest.NewClock(time.Unix(1_800_000_000, 0))
	l := newCustomerLimiter(2, 3, 100, clk.Now) // 2/s, bursts of 3: full again 1.5s after emptied

	t.Run("burst, then the refill delay", func(t *testing.T) {
		for i := range 3 {
			if ok, _ := l.allow("alice"); !ok {
				t.Fatalf("call %d within the burst refused", i+1)
			}
		}
		ok, wait := l.allow("alice")
		if ok || wait != 500*time.Millisecond {
			t.Errorf("over the burst: allow = %v, wait %v; want refused, 500ms", ok, wait)
		}
		if ok, _ := l.allow("bob"); !ok {
			t.Error("another customer refused")
		}
		clk.Advance(500 * time.Millisecond)
		if ok, _ := l.allow("alice"); !ok {
			t.Error("refused after the refill delay")
		}
	})

	t.Run("full buckets are forgotten without changing any answer", func(t *testing.T) {
		clk.Advance(1500 * time.Millisecond)
		l.allow("carol") // drops alice's and bob's buckets: full again, like new ones
		if n := l.size(); n != 1 {
			t.Errorf("buckets kept = %d, want 1 (carol)", n)
		}
		for i := range 3 {
			if ok, _ := l.allow("alice"); !ok {
				t.Fatalf("alice's call %d after a full refill refused", i+1)
			}
		}
	})

	t.Run("the number of customers is bounded", func(t *testing.T) {
		small := newCustomerLimiter(1, 1, 10, clk.Now)
		for i := range 1000 {
			small.allow(fmt.Sprint("customer-", i))
		}
		if n := small.size(); n != 10 {
			t.Errorf("buckets kept = %d, want at most 10", n)
		}
	})

	t.Run("no rate means no limit", func(t *testing.T) {
		var none *customerLimiter = newCustomerLimiter(0, 5, 10, clk.Now)
		for range 100 {
			if ok, _ := none.allow("alice"); !ok {
				t.Fatal("refused without a rate")
			}
		}
	})
}
