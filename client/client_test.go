package client_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderd/orderd/client"
	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/store"
)

func apples(n int64) []client.Item { return []client.Item{{SKU: "apple", Quantity: n}} }

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func TestPlaceOrder(t *testing.T) {
	e := start(t, &faulty{})
	e.put(t, "apple", "EUR", 120, 10)
	c := e.dial(t)
	ctx := testContext(t)

	t.Run("places once", func(t *testing.T) {
		placed, err := c.PlaceOrder(ctx, "alice", apples(2))
		if err != nil {
			t.Fatal(err)
		}
		if placed.Replayed || placed.Token == "" {
			t.Errorf("replayed=%v token=%q, want a first placement with a token", placed.Replayed, placed.Token)
		}
		o := placed.Order
		want := &orderv1.Order{
			Id: o.GetId(), CustomerId: "alice", TotalMinor: 240, Currency: "EUR",
			Status: orderv1.OrderStatus_ORDER_STATUS_PLACED, CreateTime: o.GetCreateTime(),
			Lines: []*orderv1.OrderLine{{Sku: "apple", Quantity: 2, UnitPriceMinor: 120, LineTotalMinor: 240}},
		}
		if diff := cmp.Diff(want, o, protocmp.Transform()); diff != "" || o.GetId() == "" {
			t.Errorf("order (-want +got):\n%s", diff)
		}
		if got := e.stock(t, "apple"); got != 8 {
			t.Errorf("stock = %d, want 8", got)
		}
		if got := e.orders(t, "alice"); got != 1 {
			t.Errorf("orders = %d, want 1", got)
		}

		again, err := c.PlaceOrderWithToken(ctx, placed.Token, "alice", apples(2))
		if err != nil {
			t.Fatal(err)
		}
		if !again.Replayed {
			t.Error("second call with the same token: replayed = false, want true")
		}
		if diff := cmp.Diff(placed.Order, again.Order, protocmp.Transform()); diff != "" {
			t.Errorf("replayed order differs (-first +replay):\n%s", diff)
		}
		if got := e.stock(t, "apple"); got != 8 {
			t.Errorf("stock after replay = %d, want 8", got)
		}
	})

	t.Run("generated clients share the connection", func(t *testing.T) {
		p, err := c.Products().GetProduct(ctx, &orderv1.GetProductRequest{Sku: "apple"})
		if err != nil || p.GetProduct().GetStock() != 8 {
			t.Errorf("GetProduct = %v, %v; want stock 8", p, err)
		}
		l, err := c.Orders().ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: "alice"})
		if err != nil || len(l.GetOrders()) != 1 {
			t.Errorf("ListOrders = %v, %v; want 1 order", l, err)
		}
	})
}

// TestLostReplyIsReplayed: the first two attempts place the order (or find
// it placed) but their replies are lost; the third gets the first order
// back as a replay, and only one order exists.
func TestLostReplyIsReplayed(t *testing.T) {
	var firstID atomic.Value
	f := &faulty{place: func(ctx context.Context, n int, next func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		out, err := next(ctx)
		if err != nil || n > 2 {
			return out, err
		}
		if n == 1 {
			firstID.Store(out.Order.ID)
		}
		return nil, fmt.Errorf("reply lost after commit: %w", store.ErrUnavailable)
	}}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 10)
	var retries []string
	c := e.dial(t, client.WithOnRetry(func(_ context.Context, attempt uint, err error) {
		retries = append(retries, fmt.Sprintf("%d %v %s", attempt, status.Code(err), client.Reason(err)))
	}))

	placed, err := c.PlaceOrder(testContext(t), "alice", apples(3))
	if err != nil {
		t.Fatal(err)
	}
	if !placed.Replayed {
		t.Error("replayed = false, want true: the order was placed by the first attempt")
	}
	if id, _ := firstID.Load().(string); placed.Order.GetId() != id || id == "" {
		t.Errorf("order id = %q, want %q from the first attempt", placed.Order.GetId(), id)
	}
	calls := f.placeCalls()
	if diff := cmp.Diff([]string{"", "1", "2"}, attempts(calls)); diff != "" {
		t.Errorf("x-retry-attempt of each PlaceOrder call (-want +got):\n%s", diff)
	}
	wantRetries := []string{"1 Unavailable DATABASE_UNAVAILABLE", "2 Unavailable DATABASE_UNAVAILABLE"}
	if diff := cmp.Diff(wantRetries, retries); diff != "" {
		t.Errorf("WithOnRetry calls (-want +got):\n%s", diff)
	}
	if got := e.orders(t, "alice"); got != 1 {
		t.Errorf("orders = %d, want 1", got)
	}
	if got := e.stock(t, "apple"); got != 7 {
		t.Errorf("stock = %d, want 7 (reserved once)", got)
	}
	// UNAVAILABLE carries RetryInfo 200ms.
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].at.Sub(calls[i-1].at); gap < 200*time.Millisecond {
			t.Errorf("gap before attempt %d = %v, want at least the 200ms of RetryInfo", i+1, gap)
		}
	}
}

// TestPerAttemptTimeoutIsRetried: the first attempt hangs past its own
// timeout and is retried within the caller's deadline.
func TestPerAttemptTimeoutIsRetried(t *testing.T) {
	f := &faulty{place: func(ctx context.Context, n int, next func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		if n == 1 {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Second):
			}
		}
		// After the wait the first attempt's context is over and the
		// store changes nothing.
		return next(ctx)
	}}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 10)
	c := e.dial(t, client.WithPerAttemptTimeout(300*time.Millisecond))

	placed, err := c.PlaceOrder(testContext(t), "alice", apples(1))
	if err != nil {
		t.Fatal(err)
	}
	if placed.Replayed {
		t.Error("replayed = true, want false: the first attempt placed nothing")
	}
	if diff := cmp.Diff([]string{"", "1"}, attempts(f.placeCalls())); diff != "" {
		t.Errorf("x-retry-attempt of each PlaceOrder call (-want +got):\n%s", diff)
	}
	if got := e.orders(t, "alice"); got != 1 {
		t.Errorf("orders = %d, want 1", got)
	}
}

// TestCallerDeadlineBoundsRetries: every attempt hangs; the caller's 1s
// deadline ends the call before the 5 attempts of 300ms each are spent, and
// the error says the outcome is unknown and carries the token to retry with.
func TestCallerDeadlineBoundsRetries(t *testing.T) {
	f := &faulty{place: func(ctx context.Context, _ int, next func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		<-ctx.Done()
		return next(ctx)
	}}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 10)
	c := e.dial(t, client.WithPerAttemptTimeout(300*time.Millisecond), client.WithMaxAttempts(5))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	_, err := c.PlaceOrder(ctx, "alice", apples(1))
	if status.Code(err) != codes.DeadlineExceeded || client.Outcome(err) != client.Unknown {
		t.Fatalf("err = %v (outcome %v), want DEADLINE_EXCEEDED, unknown", err, client.Outcome(err))
	}
	var pe *client.PlaceError
	if !errors.As(err, &pe) || pe.Token == "" {
		t.Fatalf("err = %#v, want a *PlaceError with the token", err)
	}
	// Each attempt lasts at least 300ms, so at most 4 fit in 1s.
	if n := len(f.placeCalls()); n < 1 || n > 4 {
		t.Errorf("PlaceOrder calls = %d, want 1..4", n)
	}
	// No attempt got as far as the database: the token is still unused.
	ts, err := c.Orders().GetToken(testContext(t), &orderv1.GetTokenRequest{Token: pe.Token, CustomerId: "alice"})
	if err != nil || ts.GetState() != orderv1.TokenState_TOKEN_STATE_ISSUED {
		t.Errorf("GetToken = %v, %v; want ISSUED", ts, err)
	}
}

// TestOutOfStockIsNotRetried: a definitive answer comes back at once.
func TestOutOfStockIsNotRetried(t *testing.T) {
	f := &faulty{}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 1)
	c := e.dial(t)

	_, err := c.PlaceOrder(testContext(t), "alice", apples(3))
	if status.Code(err) != codes.FailedPrecondition || client.Reason(err) != "OUT_OF_STOCK" || client.Outcome(err) != client.Rejected {
		t.Fatalf("err = %v, want FAILED_PRECONDITION OUT_OF_STOCK, rejected", err)
	}
	want := map[string]string{"sku": "apple", "requested": "3", "available": "1"}
	if diff := cmp.Diff(want, client.Metadata(err)); diff != "" {
		t.Errorf("ErrorInfo metadata (-want +got):\n%s", diff)
	}
	if n := len(f.placeCalls()); n != 1 {
		t.Errorf("PlaceOrder calls = %d, want 1", n)
	}
	if got := e.orders(t, "alice"); got != 0 {
		t.Errorf("orders = %d, want 0", got)
	}
}

// TestRetriedCodes: which status codes from the server are retried. The
// store answers every PlaceOrder with the code named in the request header
// x-test-code.
func TestRetriedCodes(t *testing.T) {
	f := &faulty{place: func(ctx context.Context, _ int, _ func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		code, _ := strconv.Atoi(md.Get("x-test-code")[0])
		return nil, status.Error(codes.Code(code), "injected")
	}}
	e := start(t, f)
	const maxAttempts = 3
	c := e.dial(t, client.WithMaxAttempts(maxAttempts))
	tests := []struct {
		code  codes.Code
		calls int
		want  client.Result
	}{
		{codes.Unavailable, maxAttempts, client.Unknown},
		{codes.Aborted, maxAttempts, client.Unknown},
		// The server's own DEADLINE_EXCEEDED (and CANCELLED) while the
		// caller's context is alive count as an attempt running out of
		// time: retried because a per-attempt timeout is set.
		{codes.DeadlineExceeded, maxAttempts, client.Unknown},
		{codes.Canceled, maxAttempts, client.Unknown},
		{codes.InvalidArgument, 1, client.Rejected},
		{codes.FailedPrecondition, 1, client.Rejected},
		{codes.NotFound, 1, client.Rejected},
		{codes.PermissionDenied, 1, client.Rejected},
		{codes.ResourceExhausted, 1, client.Unknown},
		{codes.Internal, 1, client.Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			before := len(f.placeCalls())
			ctx := metadata.AppendToOutgoingContext(testContext(t), "x-test-code", strconv.Itoa(int(tc.code)))
			_, err := c.PlaceOrderWithToken(ctx, "otk_test", "alice", apples(1))
			if status.Code(err) != tc.code {
				t.Fatalf("err = %v, want %v", err, tc.code)
			}
			if got := len(f.placeCalls()) - before; got != tc.calls {
				t.Errorf("calls = %d, want %d", got, tc.calls)
			}
			if got := client.Outcome(err); got != tc.want {
				t.Errorf("Outcome = %v, want %v", got, tc.want)
			}
			var pe *client.PlaceError
			if !errors.As(err, &pe) || pe.Token != "otk_test" {
				t.Errorf("err = %#v, want a *PlaceError with token otk_test", err)
			}
		})
	}

	t.Run("invalid request is rejected before the store", func(t *testing.T) {
		before := len(f.placeCalls())
		_, err := c.PlaceOrderWithToken(testContext(t), "otk_test", "alice", nil)
		if status.Code(err) != codes.InvalidArgument || client.Reason(err) != "INVALID_REQUEST" {
			t.Fatalf("err = %v, want INVALID_ARGUMENT INVALID_REQUEST", err)
		}
		if got := len(f.placeCalls()) - before; got != 0 {
			t.Errorf("store calls = %d, want 0", got)
		}
	})
}

// TestRetryInfoIsHonoured: ABORTED (store contention) carries RetryInfo
// 50ms; the client waits at least that although its own backoff is 1ms.
func TestRetryInfoIsHonoured(t *testing.T) {
	f := &faulty{place: func(ctx context.Context, n int, next func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		if n == 1 {
			return nil, fmt.Errorf("injected: %w", store.ErrContention)
		}
		return next(ctx)
	}}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 10)
	c := e.dial(t, client.WithBackoff(time.Millisecond, 0, time.Millisecond))

	placed, err := c.PlaceOrder(testContext(t), "alice", apples(1))
	if err != nil {
		t.Fatal(err)
	}
	if placed.Replayed {
		t.Error("replayed = true, want false: contention changed nothing")
	}
	calls := f.placeCalls()
	if len(calls) != 2 {
		t.Fatalf("PlaceOrder calls = %d, want 2", len(calls))
	}
	if gap := calls[1].at.Sub(calls[0].at); gap < 50*time.Millisecond {
		t.Errorf("gap between attempts = %v, want at least the 50ms of RetryInfo", gap)
	}
}

// TestIssueTokenIsRetried: PlaceOrder's token request is retried too, and
// the order is placed once.
func TestIssueTokenIsRetried(t *testing.T) {
	f := &faulty{issue: func(ctx context.Context, n int, next func(context.Context) (store.IssuedToken, error)) (store.IssuedToken, error) {
		if n == 1 {
			return store.IssuedToken{}, store.ErrUnavailable
		}
		return next(ctx)
	}}
	e := start(t, f)
	e.put(t, "apple", "EUR", 120, 10)
	c := e.dial(t)

	if _, err := c.PlaceOrder(testContext(t), "alice", apples(1)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"", "1"}, attempts(f.issueCalls())); diff != "" {
		t.Errorf("x-retry-attempt of each IssueToken call (-want +got):\n%s", diff)
	}
	if n := len(f.placeCalls()); n != 1 {
		t.Errorf("PlaceOrder calls = %d, want 1", n)
	}
}

func TestIssueTokenFailure(t *testing.T) {
	e := start(t, nil)
	c := e.dial(t)
	_, err := c.PlaceOrder(testContext(t), "not a customer id", apples(1))
	var pe *client.PlaceError
	if !errors.As(err, &pe) || pe.Token != "" || client.Outcome(err) != client.Rejected || client.Reason(err) != "INVALID_REQUEST" {
		t.Errorf("err = %v, want a *PlaceError without token, rejected INVALID_REQUEST", err)
	}
}

func withDetails(tb testing.TB, code codes.Code, details ...proto.Message) error {
	tb.Helper()
	st := status.New(code, "test")
	for _, d := range details {
		var err error
		if st, err = st.WithDetails(protoadapt.MessageV1Of(d)); err != nil {
			tb.Fatal(err)
		}
	}
	return st.Err()
}

func TestOutcomeReasonRetryDelay(t *testing.T) {
	info := &errdetails.ErrorInfo{Reason: "OUT_OF_STOCK", Domain: client.ErrorDomain, Metadata: map[string]string{"sku": "apple"}}
	other := &errdetails.ErrorInfo{Reason: "PROXY_FAILED", Domain: "proxy.example"}
	retryInfo := &errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)}
	tests := []struct {
		name    string
		err     error
		outcome client.Result
		reason  string
		delay   time.Duration
	}{
		{"nil", nil, client.Succeeded, "", 0},
		{"out of stock", withDetails(t, codes.FailedPrecondition, info), client.Rejected, "OUT_OF_STOCK", 0},
		{"orderd domain preferred", withDetails(t, codes.FailedPrecondition, other, info), client.Rejected, "OUT_OF_STOCK", 0},
		{"other domain", withDetails(t, codes.Unavailable, other), client.Unknown, "PROXY_FAILED", 0},
		{"contention", withDetails(t, codes.Aborted, &errdetails.ErrorInfo{Reason: "CONTENTION", Domain: "orderd"}, retryInfo), client.Unknown, "CONTENTION", 50 * time.Millisecond},
		{"wrapped in PlaceError", &client.PlaceError{Token: "t", Err: withDetails(t, codes.NotFound, info)}, client.Rejected, "OUT_OF_STOCK", 0},
		{"wrapped twice", fmt.Errorf("checkout: %w", &client.PlaceError{Err: withDetails(t, codes.Unavailable, retryInfo)}), client.Unknown, "", 50 * time.Millisecond},
		{"no details", status.Error(codes.InvalidArgument, "bad"), client.Rejected, "", 0},
		{"not a status", errors.New("boom"), client.Unknown, "", 0},
		{"context", context.DeadlineExceeded, client.Unknown, "", 0},
		{"deadline", status.Error(codes.DeadlineExceeded, "late"), client.Unknown, "", 0},
		{"cancelled", status.Error(codes.Canceled, "stop"), client.Unknown, "", 0},
		{"internal", status.Error(codes.Internal, "bug"), client.Unknown, "", 0},
		{"unauthenticated", status.Error(codes.Unauthenticated, "who"), client.Rejected, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.Outcome(tc.err); got != tc.outcome {
				t.Errorf("Outcome = %v, want %v", got, tc.outcome)
			}
			if got := client.Reason(tc.err); got != tc.reason {
				t.Errorf("Reason = %q, want %q", got, tc.reason)
			}
			if got := client.RetryDelay(tc.err); got != tc.delay {
				t.Errorf("RetryDelay = %v, want %v", got, tc.delay)
			}
		})
	}
}

// TestConstantsMatchServer: the client does not import the server, so its
// copies of the wire constants are checked here.
func TestConstantsMatchServer(t *testing.T) {
	if client.ReplayedHeader != server.ReplayedHeader {
		t.Errorf("ReplayedHeader = %q, server uses %q", client.ReplayedHeader, server.ReplayedHeader)
	}
	if client.ErrorDomain != server.ErrorDomain {
		t.Errorf("ErrorDomain = %q, server uses %q", client.ErrorDomain, server.ErrorDomain)
	}
}
