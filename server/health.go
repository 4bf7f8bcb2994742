package server

import (
	"context"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthService is grpc-go's health server whose Watch streams end when
// shutdown begins. GracefulStop waits for every stream, and a load
// balancer's Watch never ends by itself: without this, every shutdown
// would last the whole grace period.
type healthService struct {
	*health.Server
	stopping <-chan struct{}
}

// watchDrain is how long a watcher has to receive NOT_SERVING before its
// stream is ended.
const watchDrain = 100 * time.Millisecond

// Watch implements grpc.health.v1.Health.
func (h healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stopping:
			time.Sleep(watchDrain)
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watchStream{stream, ctx})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
