package server

import (
	"encoding/hex"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/orderd/orderd/store"
)

// Metrics are orderd's domain counters. The zero value (nil *Metrics)
// counts nothing.
type Metrics struct {
	grpc           *grpcprom.ServerMetrics
	tokensIssued   prometheus.Counter
	ordersPlaced   prometheus.Counter
	replayed       prometheus.Counter
	placeErrors    *prometheus.CounterVec
	txRetries      *prometheus.CounterVec
	janitorDeleted *prometheus.CounterVec
	tokenLimits    *prometheus.CounterVec
}

// NewMetrics creates the standard grpc_server_* metrics (with the handling
// time histogram) and the domain counters, and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_tokens_issued_total", Help: "Order tokens issued."}),
		ordersPlaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_orders_placed_total", Help: "Orders placed (first executions, not replays)."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_outcomes_replayed_total", Help: "PlaceOrder calls answered with a stored outcome (order or rejection)."}),
		placeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_place_order_errors_total", Help: "PlaceOrder calls that did not return an order, by ErrorInfo reason (OUT_OF_STOCK, TOKEN_NOT_FOUND, TOKEN_EXPIRED, TOKEN_REUSED_WITH_DIFFERENT_REQUEST, INVALID_REQUEST, …)."},
			[]string{"reason"}),
		txRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_tx_retries_total", Help: "Transactions rerun after a deadlock or lock wait timeout, by cause."},
			[]string{"cause"}),
		janitorDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_janitor_deleted_total", Help: "Rows the janitor deleted, by table."},
			[]string{"table"}),
		tokenLimits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_issue_token_limited_total", Help: "IssueToken calls refused with RESOURCE_EXHAUSTED, by limit: rate (per-customer rate on this replica) or outstanding (too many unused tokens)."},
			[]string{"limit"}),
	}
	reg.MustRegister(m.grpc, m.tokensIssued, m.ordersPlaced, m.replayed, m.placeErrors, m.txRetries, m.janitorDeleted, m.tokenLimits)
	m.janitorDeleted.WithLabelValues("tokens") // 0 until the first batch, which may take a while
	m.janitorDeleted.WithLabelValues("outcomes")
	m.tokenLimits.WithLabelValues("rate")
	m.tokenLimits.WithLabelValues("outstanding")
	for _, r := range []string{"OUT_OF_STOCK", "TOKEN_NOT_FOUND", "TOKEN_EXPIRED", "TOKEN_REUSED_WITH_DIFFERENT_REQUEST"} {
		m.placeErrors.WithLabelValues(r)
	}
	return m
}

func (m *Metrics) unary() []grpc.UnaryServerInterceptor {
	if m == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{m.grpc.UnaryServerInterceptor()}
}

func (m *Metrics) stream() []grpc.StreamServerInterceptor {
	if m == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{m.grpc.StreamServerInterceptor()}
}

func (m *Metrics) tokenIssued() {
	if m != nil {
		m.tokensIssued.Inc()
	}
}

func (m *Metrics) tokenLimited(limit string) {
	if m != nil {
		m.tokenLimits.WithLabelValues(limit).Inc()
	}
}

func (m *Metrics) placed(out *store.Outcome) {
	if m == nil {
		return
	}
	if out.Replayed {
		m.replayed.Inc()
	} else if out.Order != nil {
		m.ordersPlaced.Inc()
	}
}

func (m *Metrics) placeError(reason string) {
	if m != nil {
		m.placeErrors.WithLabelValues(reason).Inc()
	}
}

// TxRetry counts a transaction retry; pass it as store.Options.OnRetry.
func (m *Metrics) TxRetry(cause string) {
	if m != nil {
		m.txRetries.WithLabelValues(cause).Inc()
	}
}

// Purged counts what the janitor deleted; pass it as JanitorOptions.OnPurge,
// which reports every batch, so the counter moves while a backlog is purged.
func (m *Metrics) Purged(r store.PurgeResult) {
	if m != nil {
		m.janitorDeleted.WithLabelValues("tokens").Add(float64(r.Tokens))
		m.janitorDeleted.WithLabelValues("outcomes").Add(float64(r.Outcomes))
	}
}

// tokenRef is how a token appears in logs: never the token, only a short
// prefix of its SHA-256, enough to correlate calls.
func tokenRef(token string) string {
	return hex.EncodeToString(store.HashToken(token)[:6])
}
