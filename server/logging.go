package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callLog writes one line per finished call, with the keys of
// go-grpc-middleware's logging interceptor (grpc.service, grpc.method,
// grpc.code, grpc.time_ms, peer.address, …), the client's retry attempt and
// the notes that inner interceptors and handlers add with note. It builds
// the line with slog.LogAttrs directly: the library's interceptor, with its
// field lists merged per call, was a quarter of the bytes orderd allocated
// per order (docs/BENCHMARKS.md, proposal 4).
//
// Health checks and reflection are logged at debug level.
type callLog struct {
	log *slog.Logger
}

// retryHeaders carry the client's retry attempt: grpc-go's own retries
// (gRFC A6) and go-grpc-middleware's retry interceptor.
var retryHeaders = []string{"grpc-previous-rpc-attempts", "x-retry-attempt"}

func (l callLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	notes := &callNotes{}
	resp, err := handler(context.WithValue(ctx, notesKey{}, notes), req)
	l.finish(ctx, info.FullMethod, "unary", start, notes, err)
	return resp, err
}

func (l callLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	notes := &callNotes{}
	ws := middleware.WrapServerStream(ss)
	ws.WrappedContext = context.WithValue(ss.Context(), notesKey{}, notes)
	err := handler(srv, ws)
	typ := "server_stream"
	switch {
	case info.IsClientStream && info.IsServerStream:
		typ = "bidi_stream"
	case info.IsClientStream:
		typ = "client_stream"
	}
	l.finish(ss.Context(), info.FullMethod, typ, start, notes, err)
	return err
}

// infraService reports whether a service is infrastructure (health checks,
// reflection) rather than orderd's API: logged at debug level only, and
// open to every caller.
func infraService(service string) bool {
	return service == healthpb.Health_ServiceDesc.ServiceName || strings.HasPrefix(service, "grpc.reflection.")
}

// level is a call's log level by service and status code.
func level(service string, code codes.Code) slog.Level {
	if infraService(service) {
		return slog.LevelDebug
	}
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return slog.LevelError
	case codes.Unavailable, codes.Aborted:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

func (l callLog) finish(ctx context.Context, fullMethod, typ string, start time.Time, notes *callNotes, err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	took := time.Since(start)
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	code := status.Code(err)
	lvl := level(service, code)
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("protocol", "grpc"),
		slog.String("grpc.component", "server"),
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", typ))
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
	if d, ok := ctx.Deadline(); ok {
		attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
	}
	attrs = append(attrs, slog.String("grpc.code", code.String()))
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", err.Error()))
	}
	attrs = append(attrs, slog.Float64("grpc.time_ms", float64(took.Microseconds())/1000))
	for _, k := range retryHeaders {
		if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 {
			attrs = append(attrs, slog.String("retry.attempt", v[0]))
			break
		}
	}
	notes.mu.Lock()
	for i := 0; i+1 < len(notes.fields); i += 2 {
		k, _ := notes.fields[i].(string)
		attrs = append(attrs, slog.Any(k, notes.fields[i+1]))
	}
	notes.mu.Unlock()
	l.log.LogAttrs(ctx, lvl, "finished call", attrs...)
}

// callNotes collects fields for a call's log line from the interceptors
// and handlers inside callLog.
type callNotes struct {
	mu     sync.Mutex
	fields []any // key/value pairs
}

type notesKey struct{}

// note adds key/value fields to the call's log line.
func note(ctx context.Context, kv ...any) {
	if n, ok := ctx.Value(notesKey{}).(*callNotes); ok {
		n.mu.Lock()
		n.fields = append(n.fields, kv...)
		n.mu.Unlock()
	}
}
