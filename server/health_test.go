package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// TestHealthFollowsDatabase stops the database under a running server and
// starts it again: health must go NOT_SERVING and come back to SERVING.
func TestHealthFollowsDatabase(t *testing.T) {
	db := storetest.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, db.DSN("orderd"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(st, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), HealthInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Shutdown(context.Background())
	go srv.WatchDatabase(ctx)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)

	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		var last healthpb.HealthCheckResponse_ServingStatus
		for ctx.Err() == nil {
			for _, svc := range []string{"", "order.v1.OrderService"} {
				resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err != nil {
					t.Fatalf("health check %q: %v", svc, err)
				}
				last = resp.GetStatus()
				if last != want {
					break
				}
			}
			if last == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("health stayed %v, want %v", last, want)
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
	db.Stop()
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	db.Start()
	waitFor(healthpb.HealthCheckResponse_SERVING)

	// Shutdown reports NOT_SERVING to watchers before draining.
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: "order.v1.OrderService"})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v, %v", first, err)
	}
	stopped := make(chan struct{})
	go func() {
		srv.Shutdown(context.Background()) // no deadline: must not wait for the watcher
		close(stopped)
	}()
	next, err := watch.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after shutdown began: %v, %v; want NOT_SERVING", next, err)
	}
	if _, err := watch.Recv(); err == nil {
		t.Error("the Watch stream did not end after shutdown began")
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown is still waiting for the health Watch stream")
	}
}
