package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	pvmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
)

// Options configures the gRPC server. Zero values select the defaults.
type Options struct {
	// Logger receives one line per call (default slog.Default()).
	Logger *slog.Logger
	// MaxRecvMsgSize bounds a request's size in bytes (default 1 MiB).
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds concurrent calls per connection (default 1000).
	MaxConcurrentStreams uint32
	// KeepaliveMinTime is the shortest client ping interval tolerated
	// (default 10s); faster pingers are disconnected.
	KeepaliveMinTime time.Duration
	// HealthInterval is how often the database is pinged for the health
	// service (default 2s).
	HealthInterval time.Duration
	// UnaryInterceptors run after the built-in chain, just before the
	// handler (for example metrics).
	UnaryInterceptors []grpc.UnaryServerInterceptor
	// ServerOptions are passed to grpc.NewServer after the built-in ones.
	ServerOptions []grpc.ServerOption
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = 1 << 20
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 1000
	}
	if o.KeepaliveMinTime <= 0 {
		o.KeepaliveMinTime = 10 * time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 2 * time.Second
	}
}

// Server is orderd's gRPC server: OrderService, ProductService, health and
// reflection behind the production interceptor chain.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	store  Store
	opts   Options

	mu       sync.Mutex
	stopping bool
}

// serviceNames are the services whose health is reported, besides "".
var serviceNames = []string{orderv1.OrderService_ServiceDesc.ServiceName, orderv1.ProductService_ServiceDesc.ServiceName}

// New assembles the server over st. Interceptors, outermost first:
// logging, recovery (a panic becomes INTERNAL), error mapping (domain
// errors to statuses with ErrorInfo), protovalidate, then opts'.
func New(st Store, opts Options) (*Server, error) {
	opts.setDefaults()
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}
	log := opts.Logger
	loggable := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName && !strings.HasPrefix(c.Service, "grpc.reflection.")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.Internal || c == codes.Unknown || c == codes.DataLoss {
				return logging.LevelError
			}
			return logging.LevelInfo
		}),
	}
	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return statusFor(errInternal).Err()
	})
	unary := []grpc.UnaryServerInterceptor{
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(slogAdapter(log), logOpts...), loggable),
		recovery.UnaryServerInterceptor(recoveryOpt),
		errorInterceptor(log),
		pvmw.UnaryServerInterceptor(validator),
	}
	unary = append(unary, opts.UnaryInterceptors...)
	stream := []grpc.StreamServerInterceptor{
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(slogAdapter(log), logOpts...), loggable),
		recovery.StreamServerInterceptor(recoveryOpt),
	}
	gopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: opts.KeepaliveMinTime, PermitWithoutStream: true}),
	}
	gs := grpc.NewServer(append(gopts, opts.ServerOptions...)...)
	orderv1.RegisterOrderServiceServer(gs, NewOrderServer(st, log))
	orderv1.RegisterProductServiceServer(gs, NewProductServer(st))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	s := &Server{grpc: gs, health: hs, store: st, opts: opts}
	s.setServing(true)
	return s, nil
}

// slogAdapter lets go-grpc-middleware's logging interceptor write to slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// errorInterceptor answers every handler error with a status from the error
// table, and rewrites validation failures into standard error details.
// Errors the table does not know are logged and answered INTERNAL.
func errorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		if st, ok := status.FromError(err); ok {
			if st.Code() == codes.InvalidArgument {
				return nil, validationStatus(st).Err()
			}
			return nil, err
		}
		st := statusFor(err)
		if st.Code() == codes.Internal || st.Code() == codes.Unavailable || st.Code() == codes.Aborted {
			log.Log(ctx, levelFor(st.Code()), "call failed", "method", info.FullMethod, "code", st.Code().String(), "err", err)
		}
		return nil, st.Err()
	}
}

func levelFor(c codes.Code) slog.Level {
	if c == codes.Internal {
		return slog.LevelError
	}
	return slog.LevelWarn
}

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// GRPC returns the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// WatchDatabase pings the database every HealthInterval until ctx ends and
// reports NOT_SERVING while it does not answer.
func (s *Server) WatchDatabase(ctx context.Context) {
	t := time.NewTicker(s.opts.HealthInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, s.opts.HealthInterval)
		err := s.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.opts.Logger.WarnContext(ctx, "database ping failed", "err", err)
		}
		s.setServing(err == nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) setServing(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, name := range serviceNames {
		s.health.SetServingStatus(name, st)
	}
}

// Shutdown reports NOT_SERVING, stops accepting calls and waits for the
// calls in flight to finish; when ctx ends first, it cancels them.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.stopping = true
	s.health.Shutdown()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}
