// Package server implements orderd's gRPC API (order.v1) over the store:
// request handling, the conversion between protobuf and domain types, the
// one table that maps domain errors to gRPC statuses, and the production
// interceptor chain.
package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// Store is what the server needs from the database layer. *store.Store
// implements it.
type Store interface {
	IssueToken(ctx context.Context, customerID string) (store.IssuedToken, error)
	IssueTokenCapped(ctx context.Context, customerID string, maxOutstanding int) (store.IssuedToken, error)
	PlaceOrder(ctx context.Context, req store.PlaceRequest) (*store.Outcome, error)
	GetOrder(ctx context.Context, id string) (*store.Order, error)
	ListOrders(ctx context.Context, customerID string, pageSize int, after *store.Cursor) ([]*store.Order, *store.Cursor, error)
	GetToken(ctx context.Context, token, customerID string) (store.TokenStatus, error)
	PutProduct(ctx context.Context, p store.Product) (store.Product, error)
	GetProduct(ctx context.Context, sku string) (store.Product, error)
	Ping(ctx context.Context) error
	PageTokenKey(ctx context.Context) ([]byte, error)
}

var _ Store = (*store.Store)(nil)

// ReplayedHeader is the response header set to "true" when PlaceOrder
// answers with a stored outcome (an order or a rejection) instead of
// executing.
const ReplayedHeader = "idempotent-replayed"

// Page sizes of ListOrders (AIP-158).
const (
	defaultPageSize = 50
	maxPageSize     = 100
)

// OrderServer implements order.v1.OrderService.
type OrderServer struct {
	orderv1.UnimplementedOrderServiceServer
	store   Store
	log     *slog.Logger
	metrics *Metrics
	pages   *pageTokens
	// limiter (nil: none) and maxOutstanding (0: none) limit IssueToken
	// per customer; New sets them from Options.
	limiter        *customerLimiter
	maxOutstanding int
}

var _ orderv1.OrderServiceServer = (*OrderServer)(nil)

// NewOrderServer returns an OrderService over st. m may be nil.
func NewOrderServer(st Store, log *slog.Logger, m *Metrics) *OrderServer {
	return &OrderServer{store: st, log: log, metrics: m, pages: &pageTokens{store: st}}
}

// IssueToken implements order.v1.OrderService.
// With limits configured, a customer over the rate or holding too many
// unused tokens gets RESOURCE_EXHAUSTED; PlaceOrder is never limited.
func (s *OrderServer) IssueToken(ctx context.Context, req *orderv1.IssueTokenRequest) (*orderv1.IssueTokenResponse, error) {
	customer := req.GetCustomerId()
	if ok, wait := s.limiter.allow(customer); !ok {
		s.metrics.tokenLimited("rate")
		return nil, &retryAfterError{err: errRateLimited, after: wait}
	}
	var t store.IssuedToken
	var err error
	if s.maxOutstanding > 0 {
		t, err = s.store.IssueTokenCapped(ctx, customer, s.maxOutstanding)
	} else {
		// The plain INSERT, when there is no cap to check.
		t, err = s.store.IssueToken(ctx, customer)
	}
	if errors.Is(err, store.ErrTooManyTokens) {
		s.metrics.tokenLimited("outstanding")
	}
	if err != nil {
		return nil, err
	}
	s.metrics.tokenIssued()
	return issueTokenResponse(t), nil
}

// PlaceOrder implements order.v1.OrderService.
func (s *OrderServer) PlaceOrder(ctx context.Context, req *orderv1.PlaceOrderRequest) (*orderv1.PlaceOrderResponse, error) {
	out, err := s.store.PlaceOrder(ctx, placeRequest(req))
	if err != nil {
		return nil, err
	}
	s.metrics.placed(out)
	if out.Replayed {
		if err := grpc.SetHeader(ctx, metadata.Pairs(ReplayedHeader, "true")); err != nil {
			s.log.WarnContext(ctx, "set replay header", "err", err)
		}
	}
	if out.Rejection != nil {
		return nil, out.Rejection
	}
	return &orderv1.PlaceOrderResponse{Order: orderProto(out.Order), Replayed: out.Replayed}, nil
}

// GetOrder implements order.v1.OrderService.
func (s *OrderServer) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	o, err := s.store.GetOrder(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &orderv1.GetOrderResponse{Order: orderProto(o)}, nil
}

// ListOrders implements order.v1.OrderService.
func (s *OrderServer) ListOrders(ctx context.Context, req *orderv1.ListOrdersRequest) (*orderv1.ListOrdersResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after, err := s.pages.decode(ctx, req.GetPageToken(), req.GetCustomerId())
	if err != nil {
		return nil, err
	}
	orders, next, err := s.store.ListOrders(ctx, req.GetCustomerId(), size, after)
	if err != nil {
		return nil, err
	}
	resp := &orderv1.ListOrdersResponse{Orders: make([]*orderv1.Order, len(orders))}
	for i, o := range orders {
		resp.Orders[i] = orderProto(o)
	}
	if next != nil {
		if resp.NextPageToken, err = s.pages.encode(ctx, next, req.GetCustomerId()); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// GetToken implements order.v1.OrderService.
func (s *OrderServer) GetToken(ctx context.Context, req *orderv1.GetTokenRequest) (*orderv1.GetTokenResponse, error) {
	st, err := s.store.GetToken(ctx, req.GetToken(), req.GetCustomerId())
	if err != nil {
		return nil, err
	}
	return tokenStatusProto(st), nil
}

// ProductServer implements order.v1.ProductService.
type ProductServer struct {
	orderv1.UnimplementedProductServiceServer
	store Store
}

var _ orderv1.ProductServiceServer = (*ProductServer)(nil)

// NewProductServer returns a ProductService over st.
func NewProductServer(st Store) *ProductServer {
	return &ProductServer{store: st}
}

// PutProduct implements order.v1.ProductService.
func (s *ProductServer) PutProduct(ctx context.Context, req *orderv1.PutProductRequest) (*orderv1.PutProductResponse, error) {
	p, err := s.store.PutProduct(ctx, productDomain(req.GetProduct()))
	if err != nil {
		return nil, err
	}
	return &orderv1.PutProductResponse{Product: productProto(p)}, nil
}

// GetProduct implements order.v1.ProductService.
func (s *ProductServer) GetProduct(ctx context.Context, req *orderv1.GetProductRequest) (*orderv1.GetProductResponse, error) {
	p, err := s.store.GetProduct(ctx, req.GetSku())
	if err != nil {
		return nil, err
	}
	return &orderv1.GetProductResponse{Product: productProto(p)}, nil
}
