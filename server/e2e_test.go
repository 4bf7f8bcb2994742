package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// clock is a settable clock for the store, safe for concurrent use.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// panicky makes PlaceOrder panic for customer "panic" (to test recovery)
// and fail with ErrUnavailable for customer "unavailable".
type panicky struct{ server.Store }

func (p panicky) PlaceOrder(ctx context.Context, req store.PlaceRequest) (*store.Outcome, error) {
	switch req.CustomerID {
	case "panic":
		panic("boom")
	case "unavailable":
		return nil, fmt.Errorf("place: %w", store.ErrUnavailable)
	}
	return p.Store.PlaceOrder(ctx, req)
}

type env struct {
	orders   orderv1.OrderServiceClient
	products orderv1.ProductServiceClient
	health   healthpb.HealthClient
	clock    *clock
	addr     string
}

// start serves a fresh database through the production server on
// 127.0.0.1:0 and returns clients.
func start(tb testing.TB) *env {
	tb.Helper()
	return startWith(tb, server.Options{})
}

// startWith is start with server options.
func startWith(tb testing.TB, opts server.Options) *env {
	tb.Helper()
	clk := &clock{}
	st, _ := storetest.New(tb, store.Options{Now: clk.Now, TokenTTL: time.Hour, MaxOpenConns: 64})
	addr := servertest.Start(tb, panicky{st}, opts)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &env{orders: orderv1.NewOrderServiceClient(conn), products: orderv1.NewProductServiceClient(conn), health: healthpb.NewHealthClient(conn), clock: clk, addr: addr}
}

func (e *env) put(tb testing.TB, sku, currency string, price, stock int64) {
	tb.Helper()
	_, err := e.products.PutProduct(context.Background(), &orderv1.PutProductRequest{Product: &orderv1.Product{
		Sku: sku, Name: "product " + sku, UnitPriceMinor: price, Currency: currency, Stock: stock}})
	if err != nil {
		tb.Fatalf("PutProduct(%s): %v", sku, err)
	}
}

func (e *env) token(tb testing.TB, customer string) string {
	tb.Helper()
	resp, err := e.orders.IssueToken(context.Background(), &orderv1.IssueTokenRequest{CustomerId: customer})
	if err != nil {
		tb.Fatalf("IssueToken: %v", err)
	}
	return resp.GetToken()
}

func items(kv ...any) []*orderv1.LineItem {
	var out []*orderv1.LineItem
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &orderv1.LineItem{Sku: kv[i].(string), Quantity: int64(kv[i+1].(int))})
	}
	return out
}

// place calls PlaceOrder and returns the response, the replay header and
// the error.
func (e *env) place(ctx context.Context, token, customer string, it []*orderv1.LineItem) (*orderv1.PlaceOrderResponse, string, error) {
	var hdr metadata.MD
	resp, err := e.orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: token, CustomerId: customer, Items: it}, grpc.Header(&hdr))
	return resp, strings.Join(hdr.Get(server.ReplayedHeader), ","), err
}

// errorInfo returns the status code and ErrorInfo of err.
func errorInfo(tb testing.TB, err error) (codes.Code, *errdetails.ErrorInfo) {
	tb.Helper()
	st := status.Convert(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), info
		}
	}
	tb.Fatalf("status %v has no ErrorInfo", st)
	return 0, nil
}

func wantError(tb testing.TB, err error, code codes.Code, reason string) *errdetails.ErrorInfo {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got success, want %v %s", code, reason)
	}
	gotCode, info := errorInfo(tb, err)
	if gotCode != code || info.GetReason() != reason || info.GetDomain() != server.ErrorDomain {
		tb.Fatalf("got %v %s/%s (%v), want %v %s", gotCode, info.GetDomain(), info.GetReason(), err, code, reason)
	}
	return info
}

func TestPlaceOrderOverGRPC(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.put(t, "apple", "EUR", 120, 10)
	e.put(t, "pear", "EUR", 80, 10)
	tok := e.token(t, "alice")

	first, hdr, err := e.place(ctx, tok, "alice", items("pear", 1, "apple", 2))
	if err != nil {
		t.Fatalf("first PlaceOrder: %v", err)
	}
	if first.GetReplayed() || hdr != "" {
		t.Errorf("first call: replayed=%v header=%q, want false and none", first.GetReplayed(), hdr)
	}
	o := first.GetOrder()
	if o.GetTotalMinor() != 2*120+80 || o.GetCurrency() != "EUR" || o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PLACED || len(o.GetLines()) != 2 || o.GetLines()[0].GetSku() != "apple" {
		t.Errorf("order = %v", o)
	}

	// A price change afterwards does not change the replay.
	e.put(t, "apple", "EUR", 999, 8)
	again, hdr, err := e.place(ctx, tok, "alice", items("apple", 2, "pear", 1))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !again.GetReplayed() || hdr != "true" {
		t.Errorf("retry: replayed=%v header=%q, want true and \"true\"", again.GetReplayed(), hdr)
	}
	if diff := cmp.Diff(first.GetOrder(), again.GetOrder(), protocmp.Transform()); diff != "" {
		t.Errorf("replayed order differs (-first +replay):\n%s", diff)
	}

	got, err := e.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(o, got.GetOrder(), protocmp.Transform()); diff != "" {
		t.Errorf("GetOrder (-placed +got):\n%s", diff)
	}
	_, err = e.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: "nope"})
	wantError(t, err, codes.NotFound, "ORDER_NOT_FOUND")

	ts, err := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if ts.GetState() != orderv1.TokenState_TOKEN_STATE_CONSUMED || ts.GetOrderId() != o.GetId() {
		t.Errorf("GetToken = %v, want CONSUMED with order %s", ts, o.GetId())
	}
	fresh := e.token(t, "alice")
	ts, err = e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: fresh, CustomerId: "alice"})
	if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_ISSUED || ts.GetExpireTime() == nil {
		t.Errorf("GetToken(fresh) = %v, %v; want ISSUED with expiry", ts, err)
	}
	_, err = e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: fresh, CustomerId: "bob"})
	wantError(t, err, codes.NotFound, "TOKEN_NOT_FOUND")

	p, err := e.products.GetProduct(ctx, &orderv1.GetProductRequest{Sku: "pear"})
	if err != nil || p.GetProduct().GetStock() != 9 {
		t.Errorf("pear stock = %v, %v; want 9 (decremented once)", p, err)
	}
	_, err = e.products.GetProduct(ctx, &orderv1.GetProductRequest{Sku: "kiwi"})
	wantError(t, err, codes.NotFound, "PRODUCT_NOT_FOUND")
}

func TestRejectionsOverGRPC(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.put(t, "apple", "EUR", 120, 1)
	e.put(t, "dollar-thing", "USD", 100, 5)

	t.Run("out of stock is stored and replayed after restock", func(t *testing.T) {
		tok := e.token(t, "alice")
		_, hdr, err := e.place(ctx, tok, "alice", items("apple", 3))
		info := wantError(t, err, codes.FailedPrecondition, "OUT_OF_STOCK")
		want := map[string]string{"sku": "apple", "requested": "3", "available": "1"}
		if diff := cmp.Diff(want, info.GetMetadata()); diff != "" || hdr != "" {
			t.Errorf("metadata (-want +got):\n%s header=%q", diff, hdr)
		}
		e.put(t, "apple", "EUR", 120, 100)
		_, hdr, err2 := e.place(ctx, tok, "alice", items("apple", 3))
		if diff := cmp.Diff(status.Convert(err).Proto(), status.Convert(err2).Proto(), protocmp.Transform()); diff != "" {
			t.Errorf("replayed rejection differs (-first +replay):\n%s", diff)
		}
		if hdr != "true" {
			t.Errorf("replay header = %q, want true", hdr)
		}
		e.put(t, "apple", "EUR", 120, 1)
	})

	t.Run("same token with different items", func(t *testing.T) {
		tok := e.token(t, "alice")
		if _, _, err := e.place(ctx, tok, "alice", items("apple", 1)); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.place(ctx, tok, "alice", items("apple", 2))
		wantError(t, err, codes.FailedPrecondition, "TOKEN_REUSED_WITH_DIFFERENT_REQUEST")
	})

	t.Run("unknown and foreign tokens answer alike", func(t *testing.T) {
		tok := e.token(t, "alice")
		_, _, errForeign := e.place(ctx, tok, "bob", items("apple", 1))
		_, _, errUnknown := e.place(ctx, "otk_neverissuedneverissuedneverissu", "bob", items("apple", 1))
		wantError(t, errForeign, codes.NotFound, "TOKEN_NOT_FOUND")
		if diff := cmp.Diff(status.Convert(errUnknown).Proto(), status.Convert(errForeign).Proto(), protocmp.Transform()); diff != "" {
			t.Errorf("foreign token answer differs from unknown token (-unknown +foreign):\n%s", diff)
		}
		ts, err := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: "alice"})
		if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_ISSUED {
			t.Errorf("alice's token after bob's try: %v, %v; want ISSUED", ts, err)
		}
	})

	t.Run("unknown sku leaves the token usable", func(t *testing.T) {
		e.put(t, "apple", "EUR", 120, 5)
		tok := e.token(t, "alice")
		_, _, err := e.place(ctx, tok, "alice", items("apple", 1, "kiwi", 1))
		info := wantError(t, err, codes.NotFound, "PRODUCT_NOT_FOUND")
		if info.GetMetadata()["sku"] != "kiwi" {
			t.Errorf("metadata = %v, want sku kiwi", info.GetMetadata())
		}
		if _, _, err := e.place(ctx, tok, "alice", items("apple", 1)); err != nil {
			t.Errorf("token after PRODUCT_NOT_FOUND: %v", err)
		}
	})

	t.Run("currency mismatch", func(t *testing.T) {
		tok := e.token(t, "alice")
		_, _, err := e.place(ctx, tok, "alice", items("apple", 1, "dollar-thing", 1))
		wantError(t, err, codes.InvalidArgument, "CURRENCY_MISMATCH")
	})

	t.Run("expired token", func(t *testing.T) {
		tok := e.token(t, "alice")
		e.clock.Advance(2 * time.Hour)
		defer e.clock.Advance(-2 * time.Hour)
		_, _, err := e.place(ctx, tok, "alice", items("apple", 1))
		wantError(t, err, codes.FailedPrecondition, "TOKEN_EXPIRED")
		ts, err := e.orders.GetToken(ctx, &orderv1.GetTokenRequest{Token: tok, CustomerId: "alice"})
		if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_EXPIRED {
			t.Errorf("GetToken = %v, %v; want EXPIRED", ts, err)
		}
	})

	t.Run("retryable errors carry RetryInfo and the pushback trailer", func(t *testing.T) {
		tok := e.token(t, "unavailable")
		var trailer metadata.MD
		_, err := e.orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: tok, CustomerId: "unavailable", Items: items("apple", 1)}, grpc.Trailer(&trailer))
		wantError(t, err, codes.Unavailable, "DATABASE_UNAVAILABLE")
		var delay time.Duration
		for _, d := range status.Convert(err).Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				delay = ri.GetRetryDelay().AsDuration()
			}
		}
		if got := trailer.Get("grpc-retry-pushback-ms"); delay == 0 || len(got) != 1 || got[0] != fmt.Sprint(delay.Milliseconds()) {
			t.Errorf("RetryInfo %v, pushback trailer %v; want both, equal", delay, got)
		}
	})

	t.Run("panic becomes INTERNAL and the server keeps serving", func(t *testing.T) {
		tok := e.token(t, "panic")
		_, _, err := e.place(ctx, tok, "panic", items("apple", 1))
		wantError(t, err, codes.Internal, "INTERNAL")
		if _, err := e.orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
			t.Errorf("call after panic: %v", err)
		}
	})
}

func TestInvalidRequests(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	long := strings.Repeat("x", 65)
	tests := []struct {
		name  string
		req   *orderv1.PlaceOrderRequest
		field string
	}{
		{"empty token", &orderv1.PlaceOrderRequest{CustomerId: "c", Items: items("a", 1)}, "token"},
		{"empty customer", &orderv1.PlaceOrderRequest{Token: "otk_x", Items: items("a", 1)}, "customer_id"},
		{"customer too long", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: long, Items: items("a", 1)}, "customer_id"},
		{"sql in customer", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c' OR 1=1 --", Items: items("a", 1)}, "customer_id"},
		{"no items", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c"}, "items"},
		{"zero quantity", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c", Items: items("a", 0)}, "items[0].quantity"},
		{"duplicate sku", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c", Items: items("a", 1, "a", 2)}, "items"},
		{"nul byte in sku", &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c", Items: items("a\x00b", 1)}, "items[0].sku"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.orders.PlaceOrder(ctx, tc.req)
			wantError(t, err, codes.InvalidArgument, "INVALID_REQUEST")
			var fields []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if !contains(fields, tc.field) {
				t.Errorf("field violations %v, want one for %s", fields, tc.field)
			}
		})
	}
	tooMany := make([]*orderv1.LineItem, 101)
	for i := range tooMany {
		tooMany[i] = &orderv1.LineItem{Sku: fmt.Sprintf("s%d", i), Quantity: 1}
	}
	_, err := e.orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c", Items: tooMany})
	wantError(t, err, codes.InvalidArgument, "INVALID_REQUEST")
	_, err = e.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "c", PageSize: -1})
	wantError(t, err, codes.InvalidArgument, "INVALID_REQUEST")
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

func TestConcurrentDuplicatesOverGRPC(t *testing.T) {
	e := start(t)
	e.put(t, "apple", "EUR", 120, 100)
	tok := e.token(t, "alice")
	const n = 50
	var wg sync.WaitGroup
	resps := make([]*orderv1.PlaceOrderResponse, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resps[i], _, errs[i] = e.place(ctx, tok, "alice", items("apple", 3))
		})
	}
	wg.Wait()
	replays := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if resps[i].GetReplayed() {
			replays++
		}
		if diff := cmp.Diff(resps[0].GetOrder(), resps[i].GetOrder(), protocmp.Transform()); diff != "" {
			t.Fatalf("call %d got another order (-0 +%d):\n%s", i, i, diff)
		}
	}
	if replays != n-1 {
		t.Errorf("replays = %d, want %d", replays, n-1)
	}
	p, err := e.products.GetProduct(context.Background(), &orderv1.GetProductRequest{Sku: "apple"})
	if err != nil || p.GetProduct().GetStock() != 97 {
		t.Errorf("stock = %v, %v; want 97", p, err)
	}
}

func TestListOrdersPaging(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.put(t, "apple", "EUR", 1, 1000)
	var placed []string
	for range 5 {
		resp, _, err := e.place(ctx, e.token(t, "alice"), "alice", items("apple", 1))
		if err != nil {
			t.Fatal(err)
		}
		placed = append([]string{resp.GetOrder().GetId()}, placed...) // newest first
	}
	if _, _, err := e.place(ctx, e.token(t, "bob"), "bob", items("apple", 1)); err != nil {
		t.Fatal(err)
	}
	var got []string
	pageToken := ""
	for pages := 0; ; pages++ {
		resp, err := e.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageSize: 2, PageToken: pageToken})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range resp.GetOrders() {
			got = append(got, o.GetId())
		}
		if pageToken = resp.GetNextPageToken(); pageToken == "" {
			break
		}
		if pages == 0 {
			_, err := e.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "bob", PageToken: pageToken})
			wantError(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")
			_, err = e.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice", PageToken: pageToken[:len(pageToken)-2] + "zz"})
			wantError(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")
		}
	}
	if diff := cmp.Diff(placed, got); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestHealth(t *testing.T) {
	e := start(t)
	for _, svc := range []string{"", "order.v1.OrderService", "order.v1.ProductService"} {
		resp, err := e.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, resp, err)
		}
	}
}

func TestOversizeRequestIsRefused(t *testing.T) {
	e := startWith(t, server.Options{MaxRecvMsgSize: 2048})
	big := make([]*orderv1.LineItem, 60)
	for i := range big {
		big[i] = &orderv1.LineItem{Sku: fmt.Sprintf("%060d", i), Quantity: 1}
	}
	_, err := e.orders.PlaceOrder(context.Background(), &orderv1.PlaceOrderRequest{Token: "otk_x", CustomerId: "c", Items: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversize request: %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := e.orders.IssueToken(context.Background(), &orderv1.IssueTokenRequest{CustomerId: "c"}); err != nil {
		t.Errorf("the next call: %v", err)
	}
}
