package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestMigrateAndVersion(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	ctx := context.Background()
	var out bytes.Buffer
	getenv := env(map[string]string{"ORDERD_MYSQL_DSN": dsn})
	if err := run(ctx, []string{"migrate", "status"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0001") || !strings.Contains(out.String(), "pending") {
		t.Errorf("status before migrate:\n%s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "up"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "applied 0001") {
		t.Errorf("migrate up:\n%s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate"}, getenv, &out, &out); err != nil || !strings.Contains(out.String(), "up to date") {
		t.Errorf("second migrate: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"version"}, getenv, &out, &out); err != nil || !strings.HasPrefix(out.String(), "orderd ") {
		t.Errorf("version: %v %q", err, out.String())
	}
}

// orderdUnderTest is orderd run as main runs it, with a client connection
// and the product "apple" in stock.
type orderdUnderTest struct {
	orders   orderv1.OrderServiceClient
	products orderv1.ProductServiceClient
	logs     *servertest.LogBuffer
	// stop cancels run's context, as SIGTERM does, and returns run's error
	// (once orderd has stopped; later calls return the same).
	stop func() error
}

// startOrderd runs orderd on a fresh address over dsn with extra args; it is
// stopped when the test ends at the latest.
func startOrderd(t *testing.T, dsn string, stock int64, args ...string) *orderdUnderTest {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	o := &orderdUnderTest{logs: &servertest.LogBuffer{}}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "-grpc-addr=" + addr}, args...),
			env(map[string]string{"ORDERD_MYSQL_DSN": dsn}), o.logs, o.logs)
	}()
	o.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("orderd did not stop")
		}
	})
	t.Cleanup(func() {
		if err := o.stop(); err != nil {
			t.Errorf("run: %v\n%s", err, o.logs.String())
		}
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	o.orders, o.products = orderv1.NewOrderServiceClient(conn), orderv1.NewProductServiceClient(conn)
	pctx, cancelPut := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelPut()
	if _, err := o.products.PutProduct(pctx, &orderv1.PutProductRequest{Product: &orderv1.Product{
		Sku: "apple", Name: "Apple", UnitPriceMinor: 10, Currency: "EUR", Stock: stock}}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("PutProduct: %v\n%s", err, o.logs.String())
	}
	return o
}

// TestServeAndShutdown runs orderd as main does, places orders through it,
// and cancels its context as SIGTERM would while calls are in flight.
// No call may be answered with anything but OK, UNAVAILABLE or CANCELED,
// run must return cleanly, and nothing may be lost: every OK has its order,
// and every token whose call failed converges to exactly one order when
// retried against a new store.
func TestServeAndShutdown(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	od := startOrderd(t, dsn, 1_000_000, "-metrics-addr="+freeAddr(t), "-shutdown-grace=10s")
	orders := od.orders
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()

	type result struct {
		req     *orderv1.PlaceOrderRequest
		orderID string
		err     error
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []result
	)
	for w := range 8 {
		wg.Go(func() {
			customer := fmt.Sprintf("c%d", w)
			for {
				tok, err := orders.IssueToken(cctx, &orderv1.IssueTokenRequest{CustomerId: customer})
				if err != nil {
					return // the server is gone; nothing was placed with this call
				}
				req := &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: customer, Items: []*orderv1.LineItem{{Sku: "apple", Quantity: 1}}}
				resp, err := orders.PlaceOrder(cctx, req)
				mu.Lock()
				results = append(results, result{req, resp.GetOrder().GetId(), err})
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	if err := od.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	wg.Wait()
	if !strings.Contains(od.logs.String(), "stopped") {
		t.Errorf("logs:\n%s", od.logs.String())
	}

	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ok := 0
	for _, r := range results {
		if r.err != nil {
			if c := status.Code(r.err); c != codes.Unavailable && c != codes.Canceled {
				t.Errorf("call during shutdown answered %v, want UNAVAILABLE or CANCELED: %v", c, r.err)
			}
			// The retry a client would make, with the same token.
			items := []store.Item{{SKU: "apple", Quantity: 1}}
			if _, err := st.PlaceOrder(context.Background(), store.PlaceRequest{Token: r.req.GetToken(), CustomerID: r.req.GetCustomerId(), Items: items}); err != nil {
				t.Errorf("retry after shutdown: %v", err)
			}
			continue
		}
		ok++
		if _, err := st.GetOrder(context.Background(), r.orderID); err != nil {
			t.Errorf("order %s answered OK but is missing: %v", r.orderID, err)
		}
	}
	if ok == 0 {
		t.Fatal("no order was placed before shutdown: the test proved nothing")
	}
	db := storetest.DB(t, dsn)
	var orderRows, distinctTokens int
	if err := db.QueryRow("SELECT COUNT(*), COUNT(DISTINCT token_hash) FROM orders").Scan(&orderRows, &distinctTokens); err != nil {
		t.Fatal(err)
	}
	if orderRows != len(results) || distinctTokens != len(results) {
		t.Errorf("%d orders for %d distinct tokens, want one per placed token (%d)", orderRows, distinctTokens, len(results))
	}
}

// TestMetricsEndpoint scripts 2 issues, 1 place, 1 replay and 1
// OUT_OF_STOCK and reads the counters from /metrics.
func TestMetricsEndpoint(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	maddr := freeAddr(t)
	od := startOrderd(t, dsn, 1, "-metrics-addr="+maddr)
	orders := od.orders
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	place := func(qty int64) error {
		tok, err := orders.IssueToken(cctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
		if err != nil {
			return err
		}
		req := &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: "alice", Items: []*orderv1.LineItem{{Sku: "apple", Quantity: qty}}}
		if _, err := orders.PlaceOrder(cctx, req); err != nil {
			return err
		}
		_, err = orders.PlaceOrder(cctx, req) // the replay
		return err
	}
	if err := place(1); err != nil {
		t.Fatal(err)
	}
	tok, err := orders.IssueToken(cctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = orders.PlaceOrder(cctx, &orderv1.PlaceOrderRequest{Token: tok.GetToken(), CustomerId: "alice", Items: []*orderv1.LineItem{{Sku: "apple", Quantity: 5}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("want OUT_OF_STOCK, got %v", err)
	}

	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"orderd_tokens_issued_total 2",
		"orderd_orders_placed_total 1",
		"orderd_outcomes_replayed_total 1",
		`orderd_place_order_errors_total{reason="OUT_OF_STOCK"} 1`,
		`orderd_place_order_errors_total{reason="TOKEN_NOT_FOUND"} 0`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="PlaceOrder",grpc_service="order.v1.OrderService",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="PlaceOrder",grpc_service="order.v1.OrderService",grpc_type="unary"} 1`,
		"grpc_server_handling_seconds_bucket",
		"go_sql_open_connections",
		"go_sql_wait_count_total",
	} {
		if !strings.Contains(string(body), want+"\n") && !strings.Contains(string(body), want+" ") && !strings.Contains(string(body), want+"{") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Tokens never appear in logs, only a hash prefix.
	if strings.Contains(od.logs.String(), tok.GetToken()) || !strings.Contains(od.logs.String(), "token=") {
		t.Errorf("logs must name tokens by hash prefix only:\n%s", od.logs.String())
	}
}
