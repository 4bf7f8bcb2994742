package server

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
)

// errMalformedRequest: the request bytes are not a valid protobuf message
// of the method's type (truncated, wrong wire types, or a string field
// that is not UTF-8).
var errMalformedRequest = errors.New("malformed request")

// grpc-go answers a request it cannot unmarshal INTERNAL, inside the
// generated handler before any interceptor runs: a client's garbage would
// look like a server bug, and be neither logged nor counted. orderCodec
// defers the verdict instead: a malformed order.v1 request is handed on as
// an empty message and remembered, and once the call has passed the
// logging, metrics and auth interceptors, rejectMalformed answers it
// INVALID_ARGUMENT MALFORMED_REQUEST. Only order.v1 messages (unary calls,
// which errorInterceptor ends) are remembered, so nothing can pile up.
type orderCodec struct {
	encoding.CodecV2
}

// malformed holds the request messages (by pointer) that did not unmarshal,
// while their call runs.
var malformed sync.Map

func newOrderCodec() orderCodec {
	return orderCodec{CodecV2: encoding.GetCodecV2(protoenc.Name)}
}

// Unmarshal implements encoding.CodecV2.
func (c orderCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok || m.ProtoReflect().Descriptor().ParentFile().Package() != orderv1.File_order_v1_order_proto.Package() {
		return err
	}
	proto.Reset(m)
	malformed.Store(m, err)
	return nil
}

// rejectMalformed answers requests the codec could not unmarshal.
func rejectMalformed(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if cause, bad := malformed.LoadAndDelete(req); bad {
		note(ctx, "cause", cause.(error).Error())
		return nil, errMalformedRequest
	}
	return handler(ctx, req)
}

// forgetMalformed drops what the codec remembered about req, whether or
// not the call reached rejectMalformed (auth may have ended it first).
func forgetMalformed(req any) {
	malformed.Delete(req)
}
