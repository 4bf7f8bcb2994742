package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	pvmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
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
	// Metrics receives grpc_server_* and the domain counters (nil: none).
	Metrics *Metrics

	// TLS is the listener's TLS configuration (nil: plaintext).
	// NewServerTLS builds one that reloads rotated certificates.
	TLS *tls.Config
	// Auth requires an identity on every OrderService and ProductService
	// call and applies its policy (nil: every caller may call everything).
	Auth *Auth
	// DisableReflection turns server reflection off, so that callers
	// without an identity cannot list the API.
	DisableReflection bool

	// IssueTokenRate limits IssueToken per customer, in tokens per second
	// on this replica (0: no limit). Over the limit: RESOURCE_EXHAUSTED
	// TOKEN_RATE_LIMITED with RetryInfo.
	IssueTokenRate float64
	// IssueTokenBurst is how many IssueToken calls a customer may make at
	// once before IssueTokenRate applies (default 1).
	IssueTokenBurst int
	// RateLimitedCustomers bounds the customers whose rate buckets are kept
	// in memory (default 100000; see customerLimiter).
	RateLimitedCustomers int
	// MaxOutstandingTokens caps each customer's unused, unexpired tokens
	// (0: no cap). Over it: RESOURCE_EXHAUSTED TOO_MANY_OUTSTANDING_TOKENS
	// with RetryInfo.
	MaxOutstandingTokens int
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
	if o.IssueTokenBurst <= 0 {
		o.IssueTokenBurst = 1
	}
	if o.RateLimitedCustomers <= 0 {
		o.RateLimitedCustomers = 100000
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
	stopping chan struct{} // closed when Shutdown begins
}

// serviceNames are the services whose health is reported, besides "".
var serviceNames = []string{orderv1.OrderService_ServiceDesc.ServiceName, orderv1.ProductService_ServiceDesc.ServiceName}

// New assembles the server over st. Interceptors, outermost first:
// logging, metrics, recovery (a panic becomes INTERNAL), error mapping
// (domain errors to statuses with ErrorInfo, in one place), authentication
// and authorization (with Options.Auth; so denied calls are logged and
// counted, and rejected before validation or any handler runs), the
// rejection of requests that did not unmarshal (see orderCodec),
// protovalidate.
func New(st Store, opts Options) (*Server, error) {
	opts.setDefaults()
	if opts.IssueTokenRate < 0 || opts.MaxOutstandingTokens < 0 {
		return nil, errors.New("negative IssueTokenRate or MaxOutstandingTokens")
	}
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}
	log := opts.Logger
	api := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !infraService(c.Service) })
	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return statusFor(errInternal).Err()
	})
	calls := callLog{log: log}
	unary := []grpc.UnaryServerInterceptor{calls.unary}
	unary = append(unary, opts.Metrics.unary()...)
	unary = append(unary,
		recovery.UnaryServerInterceptor(recoveryOpt),
		errorInterceptor(log, opts.Metrics),
	)
	if opts.Auth != nil {
		unary = append(unary, selector.UnaryServerInterceptor(opts.Auth.unary(), api))
	}
	unary = append(unary, rejectMalformed, pvmw.UnaryServerInterceptor(validator))
	stream := []grpc.StreamServerInterceptor{calls.stream}
	stream = append(stream, opts.Metrics.stream()...)
	stream = append(stream, recovery.StreamServerInterceptor(recoveryOpt))
	if opts.Auth != nil {
		stream = append(stream, selector.StreamServerInterceptor(opts.Auth.stream(), api))
	}
	gopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: opts.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.ForceServerCodecV2(newOrderCodec()),
	}
	if opts.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	gs := grpc.NewServer(gopts...)
	orders := NewOrderServer(st, log, opts.Metrics)
	orders.limiter = newCustomerLimiter(opts.IssueTokenRate, opts.IssueTokenBurst, opts.RateLimitedCustomers, time.Now)
	orders.maxOutstanding = opts.MaxOutstandingTokens
	orderv1.RegisterOrderServiceServer(gs, orders)
	orderv1.RegisterProductServiceServer(gs, NewProductServer(st))
	hs := health.NewServer()
	stopping := make(chan struct{})
	healthpb.RegisterHealthServer(gs, healthService{Server: hs, stopping: stopping})
	if !opts.DisableReflection {
		reflection.Register(gs)
	}
	if opts.Auth != nil && opts.Auth.Policy != nil {
		var methods []string
		for name, info := range gs.GetServiceInfo() {
			for _, m := range info.Methods {
				methods = append(methods, "/"+name+"/"+m.Name)
			}
		}
		if err := opts.Auth.Policy.checkMethods(methods); err != nil {
			return nil, err
		}
	}
	if opts.Metrics != nil {
		opts.Metrics.grpc.InitializeMetrics(gs)
	}
	s := &Server{grpc: gs, health: hs, store: st, opts: opts, stopping: stopping}
	s.setServing(true)
	return s, nil
}

// errorInterceptor answers every handler error with a status from the error
// table, and rewrites validation failures into standard error details.
// Errors the table does not know are answered INTERNAL; their text, like
// that of UNAVAILABLE and ABORTED causes, goes only to the log. It also
// notes the call's token (as a hash prefix) and error reason for the log
// line, and counts PlaceOrder errors by reason.
func errorInterceptor(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		defer forgetMalformed(req)
		if r, ok := req.(interface{ GetToken() string }); ok && r.GetToken() != "" {
			note(ctx, "token", tokenRef(r.GetToken()))
		}
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		st, ok := status.FromError(err)
		switch {
		case ok && st.Code() == codes.InvalidArgument:
			st = validationStatus(st)
		case !ok:
			st = statusFor(err)
			if c := st.Code(); c == codes.Internal || c == codes.Unavailable || c == codes.Aborted {
				note(ctx, "cause", err.Error())
			}
		}
		reason := "UNKNOWN"
		for _, d := range st.Details() {
			if e, ok := d.(*errdetails.ErrorInfo); ok {
				reason = e.GetReason()
			}
		}
		note(ctx, "reason", reason)
		if ms := retryPushback(st); ms != "" {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(pushbackTrailer, ms))
		}
		if info.FullMethod == orderv1.OrderService_PlaceOrder_FullMethodName {
			m.placeError(reason)
		}
		return nil, st.Err()
	}
}

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

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
	select {
	case <-s.stopping:
		return
	default:
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

// Shutdown reports NOT_SERVING, ends health Watch streams, stops accepting
// calls and waits for the calls in flight to finish; when ctx ends first,
// it cancels them. It may be called more than once.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	select {
	case <-s.stopping:
	default:
		s.health.Shutdown()
		close(s.stopping)
	}
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
