package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// flaky fails every PlaceOrder with ErrUnavailable, before touching the
// database, while failing is set.
type flaky struct {
	server.Store
	failing atomic.Bool
}

func (f *flaky) PlaceOrder(ctx context.Context, req store.PlaceRequest) (*store.Outcome, error) {
	if f.failing.Load() {
		return nil, store.ErrUnavailable
	}
	return f.Store.PlaceOrder(ctx, req)
}

// start serves a fresh database through the production server on
// 127.0.0.1:0 and returns its address.
func start(tb testing.TB) (string, *flaky) {
	tb.Helper()
	st, _ := storetest.New(tb, store.Options{TokenTTL: time.Hour})
	f := &flaky{Store: st}
	addr := servertest.Start(tb, f, server.Options{})
	return addr, f
}

// result is one orderctl run.
type result struct {
	code           int
	stdout, stderr string
}

func orderctl(tb testing.TB, addr string, args ...string) result {
	tb.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, append([]string{"--addr", addr}, args...), &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// want fails the test unless the run exited with code.
func (r result) want(tb testing.TB, code int) result {
	tb.Helper()
	if r.code != code {
		tb.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// placed is order place -o json's output.
type placed struct {
	Order struct {
		ID         string `json:"id"`
		CustomerID string `json:"customerId"`
		TotalMinor string `json:"totalMinor"` // int64 is a string in protojson
		Currency   string `json:"currency"`
		Status     string `json:"status"`
		Lines      []struct {
			Sku      string `json:"sku"`
			Quantity string `json:"quantity"`
		} `json:"lines"`
	} `json:"order"`
	Replayed bool   `json:"replayed"`
	Token    string `json:"token"`
}

func decodePlaced(tb testing.TB, r result) placed {
	tb.Helper()
	var p placed
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		tb.Fatalf("order place -o json output is not JSON: %v\n%s", err, r.stdout)
	}
	return p
}

func field(tb testing.TB, text, name string) string {
	tb.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+(.*)$`).FindStringSubmatch(text)
	if m == nil {
		tb.Fatalf("no %q line in:\n%s", name, text)
	}
	return strings.TrimSpace(m[1])
}

func TestOrderctl(t *testing.T) {
	addr, f := start(t)

	t.Run("product put and get", func(t *testing.T) {
		r := orderctl(t, addr, "product", "put", "--sku", "apple", "--name", "Apple", "--price", "120", "--currency", "EUR", "--stock", "10").want(t, exitOK)
		if got := field(t, r.stdout, "stock"); got != "10" {
			t.Errorf("stock = %q, want 10\n%s", got, r.stdout)
		}
		r = orderctl(t, addr, "-o", "json", "product", "get", "--sku", "apple").want(t, exitOK)
		var got struct {
			Product struct {
				Sku, Name, Currency   string
				UnitPriceMinor, Stock string
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Product.Sku != "apple" || got.Product.UnitPriceMinor != "120" || got.Product.Stock != "10" {
			t.Errorf("product get -o json = %+v, %v\n%s", got, err, r.stdout)
		}
	})

	t.Run("order place text", func(t *testing.T) {
		r := orderctl(t, addr, "order", "place", "--customer", "alice", "--item", "apple=2").want(t, exitOK)
		if got := field(t, r.stdout, "replayed"); got != "no" {
			t.Errorf("replayed = %q, want no\n%s", got, r.stdout)
		}
		if got := field(t, r.stdout, "total"); got != "240 EUR (minor units)" {
			t.Errorf("total = %q\n%s", got, r.stdout)
		}
		if !regexp.MustCompile(`(?m)^\s*apple\s+2\s+120\s+240\s*$`).MatchString(r.stdout) {
			t.Errorf("no line for 2 apples in:\n%s", r.stdout)
		}
		id := field(t, r.stdout, "order")
		g := orderctl(t, addr, "order", "get", "--id", id).want(t, exitOK)
		if got := field(t, g.stdout, "order"); got != id {
			t.Errorf("order get shows %q, want %q", got, id)
		}
		tok := field(t, r.stdout, "token")
		s := orderctl(t, addr, "token", "get", "--token", tok, "--customer", "alice").want(t, exitOK)
		if got := field(t, s.stdout, "state"); got != "CONSUMED" || field(t, s.stdout, "order") != id {
			t.Errorf("token get:\n%s\nwant CONSUMED by %s", s.stdout, id)
		}
	})

	t.Run("order place json", func(t *testing.T) {
		p := decodePlaced(t, orderctl(t, addr, "-o", "json", "order", "place", "--customer", "bob", "--item", "apple=1").want(t, exitOK))
		if p.Order.ID == "" || p.Order.CustomerID != "bob" || p.Order.TotalMinor != "120" || p.Order.Status != "ORDER_STATUS_PLACED" || p.Replayed || p.Token == "" {
			t.Errorf("order place -o json = %+v", p)
		}
		l := orderctl(t, addr, "-o", "json", "order", "list", "--customer", "bob").want(t, exitOK)
		if !strings.Contains(l.stdout, p.Order.ID) {
			t.Errorf("order list does not show %s:\n%s", p.Order.ID, l.stdout)
		}
	})

	t.Run("same token twice is replayed", func(t *testing.T) {
		tok := field(t, orderctl(t, addr, "token", "issue", "--customer", "carol").want(t, exitOK).stdout, "token")
		args := []string{"-o", "json", "order", "place", "--customer", "carol", "--item", "apple=1", "--token", tok}
		first := decodePlaced(t, orderctl(t, addr, args...).want(t, exitOK))
		second := decodePlaced(t, orderctl(t, addr, args...).want(t, exitOK))
		if first.Replayed || !second.Replayed {
			t.Errorf("replayed = %v then %v, want false then true", first.Replayed, second.Replayed)
		}
		if first.Order.ID != second.Order.ID || first.Token != tok || second.Token != tok {
			t.Errorf("orders %s and %s with tokens %s, %s; want one order with token %s", first.Order.ID, second.Order.ID, first.Token, second.Token, tok)
		}
		text := orderctl(t, addr, "order", "place", "--customer", "carol", "--item", "apple=1", "--token", tok).want(t, exitOK)
		if got := field(t, text.stdout, "replayed"); !strings.HasPrefix(got, "yes") {
			t.Errorf("text replayed = %q, want yes", got)
		}
		l := orderctl(t, addr, "order", "list", "--customer", "carol").want(t, exitOK)
		if n := strings.Count(l.stdout, first.Order.ID); n != 1 || strings.Count(l.stdout, "\n") != 2 {
			t.Errorf("order list shows other than one order:\n%s", l.stdout)
		}
	})

	t.Run("rejection exits 2", func(t *testing.T) {
		r := orderctl(t, addr, "order", "place", "--customer", "dave", "--item", "apple=1000").want(t, exitRejected)
		if !strings.Contains(r.stderr, "FAILED_PRECONDITION OUT_OF_STOCK") || r.stdout != "" {
			t.Errorf("stdout %q, stderr %q; want OUT_OF_STOCK on stderr only", r.stdout, r.stderr)
		}
		j := orderctl(t, addr, "-o", "json", "order", "get", "--id", "nope").want(t, exitRejected)
		var e errorJSON
		if err := json.Unmarshal([]byte(j.stderr), &e); err != nil || e.Outcome != "rejected" || e.Code != "NOT_FOUND" || e.Reason != "ORDER_NOT_FOUND" {
			t.Errorf("order get -o json stderr = %+v, %v\n%s", e, err, j.stderr)
		}
	})

	t.Run("unknown outcome exits 3 with the token", func(t *testing.T) {
		f.failing.Store(true)
		r := orderctl(t, addr, "--max-attempts", "2", "order", "place", "--customer", "erin", "--item", "apple=1").want(t, exitUnknown)
		f.failing.Store(false)
		if !strings.Contains(r.stderr, "UNAVAILABLE DATABASE_UNAVAILABLE") {
			t.Errorf("stderr %q, want UNAVAILABLE DATABASE_UNAVAILABLE", r.stderr)
		}
		tok := field(t, r.stderr, "token:")
		if want := fmt.Sprintf("orderctl order place --customer erin --token %s --item apple=1", tok); !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q, want the command %q", r.stderr, want)
		}
		p := decodePlaced(t, orderctl(t, addr, "-o", "json", "order", "place", "--customer", "erin", "--item", "apple=1", "--token", tok).want(t, exitOK))
		if p.Token != tok || p.Replayed {
			t.Errorf("retry with the token = %+v, want a first placement with %s", p, tok)
		}
	})

	t.Run("usage errors exit 1", func(t *testing.T) {
		for _, args := range [][]string{
			{"order"},
			{"order", "cancel"},
			{"order", "place", "--customer", "alice"},
			{"order", "place", "--customer", "alice", "--item", "apple"},
			{"order", "place", "--customer", "alice", "--item", "apple=0"},
			{"-o", "yaml", "product", "get", "--sku", "apple"},
			{"product", "get", "--sku", "apple", "extra"},
			{"product", "put", "--sku", "pear", "--name", "Pear", "--currency", "EUR", "--stock", "1"},
		} {
			orderctl(t, addr, args...).want(t, exitUsage)
		}
	})

	t.Run("cannot connect exits 3", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := lis.Addr().String()
		lis.Close()
		r := orderctl(t, closed, "--max-attempts", "2", "order", "place", "--customer", "frank", "--item", "apple=1").want(t, exitUnknown)
		if !strings.Contains(r.stderr, "no order token was issued") {
			t.Errorf("stderr %q, want it to say that nothing was placed", r.stderr)
		}
	})
}
