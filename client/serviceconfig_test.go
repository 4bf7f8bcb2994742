package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/orderd/orderd/client"
	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// serviceConfigPath is the documented service config for callers that do
// not use package client.
const serviceConfigPath = "../docs/service-config.json"

func serviceConfig(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(serviceConfigPath)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// plainConn is a grpc-go connection to addr with the documented service
// config and no interceptor: its retries are grpc-go's own (gRFC A6).
func plainConn(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(serviceConfig(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// TestServiceConfigMatchesClient: the JSON documents the same policy as
// the Go client's defaults, for both services.
func TestServiceConfigMatchesClient(t *testing.T) {
	var sc struct {
		MethodConfig []struct {
			Name []struct {
				Service string `json:"service"`
				Method  string `json:"method"`
			} `json:"name"`
			RetryPolicy *struct {
				MaxAttempts          int      `json:"maxAttempts"`
				RetryableStatusCodes []string `json:"retryableStatusCodes"`
			} `json:"retryPolicy"`
		} `json:"methodConfig"`
	}
	if err := json.Unmarshal([]byte(serviceConfig(t)), &sc); err != nil {
		t.Fatal(err)
	}
	var services, codeNames []string
	for _, c := range client.RetryCodes() {
		// The service config spells codes as in google.rpc.Code.
		codeNames = append(codeNames, map[codes.Code]string{codes.Unavailable: "UNAVAILABLE", codes.Aborted: "ABORTED"}[c])
	}
	for _, mc := range sc.MethodConfig {
		if mc.RetryPolicy == nil {
			t.Errorf("method config %v has no retryPolicy", mc.Name)
			continue
		}
		if mc.RetryPolicy.MaxAttempts != client.DefaultMaxAttempts {
			t.Errorf("maxAttempts = %d, client default %d", mc.RetryPolicy.MaxAttempts, client.DefaultMaxAttempts)
		}
		if diff := cmp.Diff(codeNames, mc.RetryPolicy.RetryableStatusCodes); diff != "" {
			t.Errorf("retryableStatusCodes (-client +json):\n%s", diff)
		}
		for _, n := range mc.Name {
			if n.Method != "" {
				t.Errorf("policy for one method %s/%s: the client retries whole services", n.Service, n.Method)
			}
			services = append(services, n.Service)
		}
	}
	want := []string{orderv1.OrderService_ServiceDesc.ServiceName, orderv1.ProductService_ServiceDesc.ServiceName}
	if diff := cmp.Diff(want, services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

// TestServiceConfigRetries: a plain grpc-go client with the documented
// service config retries PlaceOrder as documented against a real server.
func TestServiceConfigRetries(t *testing.T) {
	const failures = 2
	failFirst := func(err error, commitFirst bool) hook[*store.Outcome] {
		return func(ctx context.Context, n int, next func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
			if n > failures {
				return next(ctx)
			}
			if commitFirst {
				if _, err := next(ctx); err != nil {
					return nil, err
				}
			}
			return nil, fmt.Errorf("injected: %w", err)
		}
	}
	always := func(err error) hook[*store.Outcome] {
		return func(context.Context, int, func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
			return nil, err
		}
	}
	tests := []struct {
		name     string
		hook     hook[*store.Outcome]
		quantity int64
		code     codes.Code
		reason   string
		calls    int
		replayed bool
	}{
		{"UNAVAILABLE is retried", failFirst(store.ErrUnavailable, false), 1, codes.OK, "", failures + 1, false},
		{"ABORTED is retried", failFirst(store.ErrContention, false), 1, codes.OK, "", failures + 1, false},
		{"lost reply is retried and replayed", failFirst(store.ErrUnavailable, true), 1, codes.OK, "", failures + 1, true},
		{"OUT_OF_STOCK is not retried", nil, 100, codes.FailedPrecondition, "OUT_OF_STOCK", 1, false},
		{"UNAVAILABLE until maxAttempts", always(store.ErrUnavailable), 1, codes.Unavailable, "DATABASE_UNAVAILABLE", 5, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &faulty{place: tc.hook}
			e := start(t, f)
			e.put(t, "apple", "EUR", 120, 10)
			orders := orderv1.NewOrderServiceClient(plainConn(t, e.addr))
			ctx := testContext(t)
			tok, err := orders.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{
				Token: tok.GetToken(), CustomerId: "alice",
				Items: []*orderv1.LineItem{{Sku: "apple", Quantity: tc.quantity}},
			})
			if status.Code(err) != tc.code || client.Reason(err) != tc.reason {
				t.Fatalf("err = %v, want %v %s", err, tc.code, tc.reason)
			}
			if resp.GetReplayed() != tc.replayed {
				t.Errorf("replayed = %v, want %v", resp.GetReplayed(), tc.replayed)
			}
			calls := f.placeCalls()
			var previous []string
			for i, c := range calls {
				previous = append(previous, c.previous)
				if c.attempt != "" {
					t.Errorf("call %d has %s %q: only grpc-go's retries should run", i+1, client.AttemptHeader, c.attempt)
				}
			}
			want := []string{""}
			for i := 1; i < tc.calls; i++ {
				want = append(want, fmt.Sprint(i))
			}
			if diff := cmp.Diff(want, previous); diff != "" {
				t.Errorf("grpc-previous-rpc-attempts of each call (-want +got):\n%s", diff)
			}
			wantOrders := 1
			if tc.code != codes.OK {
				wantOrders = 0
			}
			if got := e.orders(t, "alice"); got != wantOrders {
				t.Errorf("orders = %d, want %d", got, wantOrders)
			}
		})
	}
}

// TestOneRetryLayer: a resolver that hands out a service config with a
// retryPolicy does not add grpc-go's retries to the client's own. The
// control connection shows that the resolver's config would apply.
func TestOneRetryLayer(t *testing.T) {
	f := &faulty{place: func(_ context.Context, _ int, _ func(context.Context) (*store.Outcome, error)) (*store.Outcome, error) {
		return nil, status.Error(codes.Unavailable, "injected, without RetryInfo")
	}}
	e := start(t, f)
	withResolvedConfig := func(scheme string) grpc.DialOption {
		r := manual.NewBuilderWithScheme(scheme)
		r.BuildCallback = func(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) {
			r.InitialState(resolver.State{
				Addresses:     []resolver.Address{{Addr: e.addr}},
				ServiceConfig: cc.ParseServiceConfig(serviceConfig(t)),
			})
		}
		return grpc.WithResolvers(r)
	}
	place := func(orders orderv1.OrderServiceClient) (int, error) {
		before := len(f.placeCalls())
		_, err := orders.PlaceOrder(testContext(t), &orderv1.PlaceOrderRequest{
			Token: "otk_test", CustomerId: "alice", Items: []*orderv1.LineItem{{Sku: "apple", Quantity: 1}}})
		return len(f.placeCalls()) - before, err
	}

	control, err := grpc.NewClient("control:///orderd", grpc.WithTransportCredentials(insecure.NewCredentials()), withResolvedConfig("control"))
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	if n, err := place(orderv1.NewOrderServiceClient(control)); n != 5 || status.Code(err) != codes.Unavailable {
		t.Fatalf("control: %d calls, %v; want the resolver's policy to make 5", n, err)
	}

	c, err := client.Dial("guarded:///orderd", client.WithMaxAttempts(2),
		client.WithBackoff(time.Millisecond, 0, time.Millisecond),
		client.WithDialOptions(withResolvedConfig("guarded")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := place(c.Orders()); n != 2 || status.Code(err) != codes.Unavailable {
		t.Errorf("client: %d calls, %v; want 2 (its own attempts only)", n, err)
	}
}
