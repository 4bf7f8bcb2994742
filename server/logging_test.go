package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// TestCallLogLines checks the one line per call: the keys operators grep
// for, the retry attempt, the notes of inner interceptors (token hash
// prefix, reason), and debug level for health checks, streams included.
func TestCallLogLines(t *testing.T) {
	var logs servertest.LogBuffer
	st, _ := storetest.New(t, store.Options{TokenTTL: time.Hour})
	conn := dial(t, servertest.Start(t, st, server.Options{
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}), insecure.NewCredentials())
	orders := orderv1.NewOrderServiceClient(conn)
	ctx := context.Background()

	retried := metadata.AppendToOutgoingContext(ctx, "x-retry-attempt", "2")
	if _, err := orders.IssueToken(retried, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Fatal(err)
	}
	const token = "otk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	if _, err := orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{Token: token, CustomerId: "alice",
		Items: []*orderv1.LineItem{{Sku: "nope", Quantity: 1}}}); err == nil {
		t.Fatal("PlaceOrder with an unknown token succeeded")
	}
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := health.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()

	// The stream's line is written after the server sees the cancellation.
	var lines map[string]map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		lines = map[string]map[string]any{}
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line is not JSON: %q", l)
			}
			if m["msg"] == "finished call" {
				lines[m["grpc.method"].(string)] = m
			}
		}
		if lines["Watch"] != nil || time.Now().After(deadline) {
			break
		}
	}

	// Values that differ per run are only checked for presence.
	for method, m := range lines {
		for _, k := range []string{"peer.address", "grpc.start_time", "grpc.time_ms", "time"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %s in %v", method, k, m)
			}
			delete(m, k)
		}
		delete(m, "grpc.request.deadline")
	}
	common := func(level, service, method, typ, code string, more map[string]any) map[string]any {
		m := map[string]any{"level": level, "msg": "finished call", "protocol": "grpc", "grpc.component": "server",
			"grpc.service": service, "grpc.method": method, "grpc.method_type": typ, "grpc.code": code}
		for k, v := range more {
			m[k] = v
		}
		return m
	}
	const svc, hsvc = "order.v1.OrderService", "grpc.health.v1.Health"
	want := map[string]map[string]any{
		"IssueToken": common("INFO", svc, "IssueToken", "unary", "OK", map[string]any{"retry.attempt": "2"}),
		"PlaceOrder": common("INFO", svc, "PlaceOrder", "unary", "NotFound", map[string]any{
			"grpc.error": "rpc error: code = NotFound desc = no such order token for this customer",
			"token":      "3f595caf2193", "reason": "TOKEN_NOT_FOUND"}),
		"Check": common("DEBUG", hsvc, "Check", "unary", "OK", nil),
		"Watch": common("DEBUG", hsvc, "Watch", "server_stream", "Canceled", map[string]any{
			"grpc.error": "rpc error: code = Canceled desc = Stream has ended."}),
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("finished call lines (-want +got):\n%s", d)
	}
}
