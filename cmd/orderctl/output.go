package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderd/orderd/client"
	orderv1 "github.com/orderd/orderd/gen/order/v1"
)

var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// writeJSON writes v indented, on one line per field, with a final newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeProtoJSON writes m as protojson, indented the same way as writeJSON
// (protojson's own whitespace is deliberately unstable).
func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	return writeJSON(w, json.RawMessage(b))
}

// placedJSON is order place's JSON output: the PlaceOrderResponse fields
// plus the token.
type placedJSON struct {
	Order    json.RawMessage `json:"order"`
	Replayed bool            `json:"replayed"`
	Token    string          `json:"token"`
}

func writePlacedJSON(w io.Writer, p *client.Placed) error {
	b, err := jsonOptions.Marshal(p.Order)
	if err != nil {
		return err
	}
	return writeJSON(w, placedJSON{Order: b, Replayed: p.Replayed, Token: p.Token})
}

// writeFields writes key, value pairs as aligned lines.
func writeFields(w io.Writer, kv ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s\t%s\n", kv[i], kv[i+1])
	}
	return tw.Flush()
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

// enumName drops an enum value's type prefix: TOKEN_STATE_ISSUED → ISSUED.
func enumName(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

func money(minor int64, currency string) string {
	return fmt.Sprintf("%d %s (minor units)", minor, currency)
}

// writeOrder writes an order, after extra key, value pairs.
func writeOrder(w io.Writer, o *orderv1.Order, extra ...string) error {
	kv := append([]string{"order", o.GetId()}, extra...)
	kv = append(kv,
		"customer", o.GetCustomerId(),
		"status", enumName(o.GetStatus().String(), "ORDER_STATUS_"),
		"created", formatTime(o.GetCreateTime()),
		"total", money(o.GetTotalMinor(), o.GetCurrency()),
	)
	if err := writeFields(w, kv...); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SKU\tQUANTITY\tUNIT PRICE\tLINE TOTAL")
	for _, l := range o.GetLines() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", l.GetSku(), l.GetQuantity(), l.GetUnitPriceMinor(), l.GetLineTotalMinor())
	}
	return tw.Flush()
}

func writeOrderList(w io.Writer, resp *orderv1.ListOrdersResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tTOTAL\tCURRENCY\tLINES")
	for _, o := range resp.GetOrders() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", o.GetId(), formatTime(o.GetCreateTime()), o.GetTotalMinor(), o.GetCurrency(), len(o.GetLines()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if t := resp.GetNextPageToken(); t != "" {
		_, err := fmt.Fprintf(w, "\nnext page: --page-token %s\n", t)
		return err
	}
	return nil
}

func writeProduct(w io.Writer, p *orderv1.Product) error {
	return writeFields(w,
		"sku", p.GetSku(),
		"name", p.GetName(),
		"price", money(p.GetUnitPriceMinor(), p.GetCurrency()),
		"stock", fmt.Sprint(p.GetStock()),
	)
}

// grpcStatus returns the status of the gRPC error err wraps, with its own
// message (status.Convert would put the wrappers' text in the message).
func grpcStatus(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if st := gs.GRPCStatus(); st != nil {
			return st, true
		}
	}
	return nil, false
}

func hasStatus(err error) bool {
	_, ok := grpcStatus(err)
	return ok
}

// codeName spells a code as google.rpc.Code does: FAILED_PRECONDITION.
func codeName(st *status.Status) string {
	return code.Code(st.Code()).String()
}

// describe is one line about a gRPC error: code, reason, message.
func describe(err error) string {
	st, _ := grpcStatus(err)
	var b strings.Builder
	b.WriteString(codeName(st))
	if r := client.Reason(err); r != "" {
		b.WriteString(" " + r)
	}
	b.WriteString(": " + st.Message())
	return b.String()
}

// errorJSON is the JSON written to stderr for a gRPC error with -o json.
type errorJSON struct {
	Outcome  string            `json:"outcome"`
	Code     string            `json:"code"`
	Reason   string            `json:"reason,omitempty"`
	Message  string            `json:"message"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Token is set for order place when the outcome is unknown.
	Token string `json:"token,omitempty"`
}

func writeErrorJSON(w io.Writer, err error, outcome client.Result, token string) {
	st, _ := grpcStatus(err)
	e := errorJSON{
		Outcome:  outcome.String(),
		Code:     codeName(st),
		Reason:   client.Reason(err),
		Message:  st.Message(),
		Metadata: client.Metadata(err),
	}
	if outcome == client.Unknown {
		e.Token = token
	}
	if err := writeJSON(w, e); err != nil {
		fmt.Fprintln(w, "orderctl:", err)
	}
}
