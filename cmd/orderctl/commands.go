package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/orderd/orderd/client"
	orderv1 "github.com/orderd/orderd/gen/order/v1"
)

// env is what a command's action works with.
type env struct {
	client *client.Client
	out    io.Writer
	json   bool
	// set names the flags given on the command line.
	set map[string]bool
}

// require returns a usage error naming the first of the flags not given.
func (e *env) require(names ...string) error {
	for _, n := range names {
		if !e.set[n] {
			return usagef("--%s is required", n)
		}
	}
	return nil
}

// action runs a command once its flags are parsed.
type action func(ctx context.Context, e *env) error

// command is one "group verb" of orderctl.
type command struct {
	args string
	// setup registers the command's flags and returns its action.
	setup func(fs *flag.FlagSet) action
	// local commands do not talk to orderd (env.client is nil).
	local bool
}

var commands = map[string]command{
	"token issue":  {args: "--customer C", setup: tokenIssue},
	"token get":    {args: "--token T --customer C", setup: tokenGet},
	"order place":  {args: "--customer C --item SKU=QTY [--item ...] [--token T]", setup: orderPlace},
	"order get":    {args: "--id ID", setup: orderGet},
	"order list":   {args: "--customer C [--page-size N] [--page-token T]", setup: orderList},
	"product put":  {args: "--sku S --name N --price MINOR --currency CUR --stock N", setup: productPut},
	"product get":  {args: "--sku S", setup: productGet},
	"certs create": {args: "[--dir D] [--valid-for D] [--force]", setup: certsCreate, local: true},
}

func tokenIssue(fs *flag.FlagSet) action {
	customer := fs.String("customer", "", "the customer the token is for")
	return func(ctx context.Context, e *env) error {
		if err := e.require("customer"); err != nil {
			return err
		}
		resp, err := e.client.Orders().IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: *customer})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		return writeFields(e.out, "token", resp.GetToken(), "expires", formatTime(resp.GetExpireTime()))
	}
}

func tokenGet(fs *flag.FlagSet) action {
	token := fs.String("token", "", "the token from token issue")
	customer := fs.String("customer", "", "the customer the token was issued to")
	return func(ctx context.Context, e *env) error {
		if err := e.require("token", "customer"); err != nil {
			return err
		}
		resp, err := e.client.Orders().GetToken(ctx, &orderv1.GetTokenRequest{Token: *token, CustomerId: *customer})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		kv := []string{"state", enumName(resp.GetState().String(), "TOKEN_STATE_")}
		if resp.GetExpireTime() != nil {
			kv = append(kv, "expires", formatTime(resp.GetExpireTime()))
		}
		if resp.GetOrderId() != "" {
			kv = append(kv, "order", resp.GetOrderId())
		}
		if resp.GetRejectionReason() != "" {
			kv = append(kv, "rejected", resp.GetRejectionReason())
		}
		if resp.GetConsumeTime() != nil {
			kv = append(kv, "consumed", formatTime(resp.GetConsumeTime()))
		}
		return writeFields(e.out, kv...)
	}
}

// itemsFlag collects repeated --item SKU=QTY.
type itemsFlag []client.Item

func (f *itemsFlag) String() string {
	parts := make([]string, len(*f))
	for i, it := range *f {
		parts[i] = fmt.Sprintf("%s=%d", it.SKU, it.Quantity)
	}
	return strings.Join(parts, ",")
}

func (f *itemsFlag) Set(v string) error {
	sku, qty, ok := strings.Cut(v, "=")
	if !ok || sku == "" {
		return errors.New("want SKU=QTY")
	}
	n, err := strconv.ParseInt(qty, 10, 64)
	if err != nil || n < 1 {
		return fmt.Errorf("quantity %q is not a positive integer", qty)
	}
	*f = append(*f, client.Item{SKU: sku, Quantity: n})
	return nil
}

func orderPlace(fs *flag.FlagSet) action {
	customer := fs.String("customer", "", "the customer placing the order")
	token := fs.String("token", "", "place with this token (from token issue, or printed by a failed order place) instead of issuing one")
	var items itemsFlag
	fs.Var(&items, "item", "a product and quantity as SKU=QTY; repeat for more lines")
	return func(ctx context.Context, e *env) error {
		if err := e.require("customer", "item"); err != nil {
			return err
		}
		var placed *client.Placed
		var err error
		if e.set["token"] {
			placed, err = e.client.PlaceOrderWithToken(ctx, *token, *customer, items)
		} else {
			placed, err = e.client.PlaceOrder(ctx, *customer, items)
		}
		if err != nil {
			var pe *client.PlaceError
			if client.Outcome(err) == client.Unknown && errors.As(err, &pe) {
				words := []string{"orderctl", "order", "place", "--customer", *customer}
				hint := "the order may have been placed; retry with the same token, which places it or shows it:\n  "
				if pe.Token == "" {
					hint = "no order token was issued, so nothing was placed; retry with:\n  "
				} else {
					words = append(words, "--token", pe.Token)
				}
				for _, it := range items {
					words = append(words, "--item", fmt.Sprintf("%s=%d", it.SKU, it.Quantity))
				}
				return &hinted{err: err, hint: hint + quoteArgs(words)}
			}
			return err
		}
		if e.json {
			return writePlacedJSON(e.out, placed)
		}
		replayed := "no"
		if placed.Replayed {
			replayed = "yes (placed earlier with this token, not placed again)"
		}
		return writeOrder(e.out, placed.Order, "replayed", replayed, "token", placed.Token)
	}
}

func orderGet(fs *flag.FlagSet) action {
	id := fs.String("id", "", "the order id")
	return func(ctx context.Context, e *env) error {
		if err := e.require("id"); err != nil {
			return err
		}
		resp, err := e.client.Orders().GetOrder(ctx, &orderv1.GetOrderRequest{Id: *id})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		return writeOrder(e.out, resp.GetOrder())
	}
}

func orderList(fs *flag.FlagSet) action {
	customer := fs.String("customer", "", "whose orders")
	pageSize := fs.Int("page-size", 0, "orders per page (0: the server's default, 50; at most 100)")
	pageToken := fs.String("page-token", "", "the next page token printed by the previous page")
	return func(ctx context.Context, e *env) error {
		if err := e.require("customer"); err != nil {
			return err
		}
		if *pageSize < 0 || *pageSize > 1<<31-1 {
			return usagef("--page-size must be between 0 and %d", 1<<31-1)
		}
		resp, err := e.client.Orders().ListOrders(ctx, &orderv1.ListOrdersRequest{CustomerId: *customer, PageSize: int32(*pageSize), PageToken: *pageToken})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		return writeOrderList(e.out, resp)
	}
}

func productPut(fs *flag.FlagSet) action {
	p := &orderv1.Product{}
	fs.StringVar(&p.Sku, "sku", "", "stock keeping unit")
	fs.StringVar(&p.Name, "name", "", "display name")
	fs.Int64Var(&p.UnitPriceMinor, "price", 0, "unit price in minor units of the currency (cents for EUR)")
	fs.StringVar(&p.Currency, "currency", "", "ISO 4217 currency code, e.g. EUR")
	fs.Int64Var(&p.Stock, "stock", 0, "units available")
	return func(ctx context.Context, e *env) error {
		if err := e.require("sku", "name", "price", "currency", "stock"); err != nil {
			return err
		}
		resp, err := e.client.Products().PutProduct(ctx, &orderv1.PutProductRequest{Product: p})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		return writeProduct(e.out, resp.GetProduct())
	}
}

func productGet(fs *flag.FlagSet) action {
	sku := fs.String("sku", "", "stock keeping unit")
	return func(ctx context.Context, e *env) error {
		if err := e.require("sku"); err != nil {
			return err
		}
		resp, err := e.client.Products().GetProduct(ctx, &orderv1.GetProductRequest{Sku: *sku})
		if err != nil {
			return err
		}
		if e.json {
			return writeProtoJSON(e.out, resp)
		}
		return writeProduct(e.out, resp.GetProduct())
	}
}
