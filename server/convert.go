package server

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// This file is the only place that converts between protobuf and domain
// types.

func issueTokenResponse(t store.IssuedToken) *orderv1.IssueTokenResponse {
	return &orderv1.IssueTokenResponse{Token: t.Token, ExpireTime: timestamppb.New(t.ExpireTime)}
}

func placeRequest(req *orderv1.PlaceOrderRequest) store.PlaceRequest {
	items := make([]store.Item, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = store.Item{SKU: it.GetSku(), Quantity: it.GetQuantity()}
	}
	return store.PlaceRequest{Token: req.GetToken(), CustomerID: req.GetCustomerId(), Items: items}
}

func orderProto(o *store.Order) *orderv1.Order {
	lines := make([]*orderv1.OrderLine, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = &orderv1.OrderLine{Sku: l.SKU, Quantity: l.Quantity, UnitPriceMinor: l.UnitPriceMinor, LineTotalMinor: l.LineTotalMinor}
	}
	return &orderv1.Order{
		Id:         o.ID,
		CustomerId: o.CustomerID,
		Lines:      lines,
		TotalMinor: o.TotalMinor,
		Currency:   o.Currency,
		Status:     orderStatusProto(o.Status),
		CreateTime: timestamppb.New(o.CreateTime),
	}
}

func orderStatusProto(s store.OrderStatus) orderv1.OrderStatus {
	switch s {
	case store.OrderStatusPlaced:
		return orderv1.OrderStatus_ORDER_STATUS_PLACED
	}
	return orderv1.OrderStatus_ORDER_STATUS_UNSPECIFIED
}

func tokenStatusProto(st store.TokenStatus) *orderv1.GetTokenResponse {
	resp := &orderv1.GetTokenResponse{OrderId: st.OrderID}
	switch st.State {
	case store.TokenIssued:
		resp.State = orderv1.TokenState_TOKEN_STATE_ISSUED
	case store.TokenExpired:
		resp.State = orderv1.TokenState_TOKEN_STATE_EXPIRED
	case store.TokenConsumed:
		resp.State = orderv1.TokenState_TOKEN_STATE_CONSUMED
	}
	if !st.ExpireTime.IsZero() {
		resp.ExpireTime = timestamppb.New(st.ExpireTime)
	}
	if !st.ConsumeTime.IsZero() {
		resp.ConsumeTime = timestamppb.New(st.ConsumeTime)
	}
	if st.Rejection != nil {
		resp.RejectionReason = lookupError(st.Rejection).reason
	}
	return resp
}

func productDomain(p *orderv1.Product) store.Product {
	return store.Product{SKU: p.GetSku(), Name: p.GetName(), UnitPriceMinor: p.GetUnitPriceMinor(), Currency: p.GetCurrency(), Stock: p.GetStock()}
}

func productProto(p store.Product) *orderv1.Product {
	return &orderv1.Product{Sku: p.SKU, Name: p.Name, UnitPriceMinor: p.UnitPriceMinor, Currency: p.Currency, Stock: p.Stock}
}
