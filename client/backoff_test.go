package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestBackoff(t *testing.T) {
	withRetryInfo := func(d time.Duration) error {
		st, err := status.New(codes.Aborted, "busy").WithDetails(protoadapt.MessageV1Of(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}))
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	bf := backoff(10*time.Millisecond, 0, 50*time.Millisecond)
	tests := []struct {
		name    string
		lastErr error
		attempt uint
		want    time.Duration
	}{
		{"first retry", status.Error(codes.Unavailable, "down"), 1, 10 * time.Millisecond},
		{"doubles", status.Error(codes.Unavailable, "down"), 3, 40 * time.Millisecond},
		{"capped", status.Error(codes.Unavailable, "down"), 10, 50 * time.Millisecond},
		{"no overflow", status.Error(codes.Unavailable, "down"), 200, 50 * time.Millisecond},
		{"RetryInfo longer than backoff", withRetryInfo(3 * time.Second), 1, 3 * time.Second},
		{"RetryInfo shorter than backoff", withRetryInfo(time.Millisecond), 3, 40 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := &lastError{}
			l.set(tc.lastErr)
			ctx := context.WithValue(context.Background(), lastErrorKey{}, l)
			if got := bf(ctx, tc.attempt); got != tc.want {
				t.Errorf("backoff(attempt %d) = %v, want %v", tc.attempt, got, tc.want)
			}
		})
	}
	if got := backoff(0, 0, time.Second)(context.Background(), 1); got != 0 {
		t.Errorf("backoff with base 0 and no last error = %v, want 0", got)
	}
}
