package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestConfigEnvironmentAndFlags(t *testing.T) {
	const dsn = "u:p@tcp(db:3306)/orderd"
	c, err := parseConfig("orderd", []string{"-token-ttl=2h"}, env(map[string]string{
		"ORDERD_MYSQL_DSN": dsn,
		"ORDERD_TOKEN_TTL": "5m", // the flag wins
		"ORDERD_GRPC_ADDR": "0.0.0.0:6000",
		// Plaintext off loopback must be asked for.
		"ORDERD_INSECURE_PLAINTEXT": "true",
		"ORDERD_JANITOR_RATE":       "0", // unpaced
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MySQLDSN != dsn || c.TokenTTL != 2*time.Hour || c.GRPCAddr != "0.0.0.0:6000" || c.MetricsAddr != "127.0.0.1:9090" || !c.InsecurePlaintext || c.JanitorRate != 0 {
		t.Errorf("config = %+v", c)
	}
}

func TestConfigJanitorRate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want float64
	}{
		{nil, nil, 2000}, // the default
		{[]string{"-janitor-rate=500"}, nil, 500},
		{nil, map[string]string{"ORDERD_JANITOR_RATE": "0"}, 0},
		{[]string{"-janitor-rate=0.5"}, map[string]string{"ORDERD_JANITOR_RATE": "100"}, 0.5}, // the flag wins
	} {
		c, err := parseConfig("orderd", append([]string{"-mysql-dsn=u@tcp(h:1)/d"}, tc.args...), env(tc.env), io.Discard)
		if err != nil {
			t.Errorf("parseConfig(%q, env %v): %v", tc.args, tc.env, err)
		} else if c.JanitorRate != tc.want {
			t.Errorf("parseConfig(%q, env %v): rate %v, want %v", tc.args, tc.env, c.JanitorRate, tc.want)
		}
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"missing DSN", nil, nil, "ORDERD_MYSQL_DSN"},
		{"DSN without database", []string{"-mysql-dsn=u@tcp(h:1)/"}, nil, "names no database"},
		{"bad env duration", nil, map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(h:1)/d", "ORDERD_LOCK_WAIT": "soon"}, "ORDERD_LOCK_WAIT"},
		{"sub-second lock wait", []string{"-mysql-dsn=u@tcp(h:1)/d", "-lock-wait=200ms"}, nil, "-lock-wait"},
		{"idle above open", []string{"-mysql-dsn=u@tcp(h:1)/d", "-db-max-open=4", "-db-max-idle=8"}, nil, "-db-max-idle"},
		{"log level", []string{"-mysql-dsn=u@tcp(h:1)/d", "-log-level=loud"}, nil, "-log-level"},
		{"bad address", []string{"-mysql-dsn=u@tcp(h:1)/d", "-grpc-addr=nowhere"}, nil, "-grpc-addr"},
		{"stray argument", []string{"-mysql-dsn=u@tcp(h:1)/d", "extra"}, nil, "unexpected arguments"},
		{"plaintext on all interfaces", []string{"-mysql-dsn=u@tcp(h:1)/d", "-grpc-addr=:50051"}, nil, "-insecure-plaintext"},
		{"plaintext on a public address names TLS", []string{"-mysql-dsn=u@tcp(h:1)/d", "-grpc-addr=10.1.2.3:50051"}, nil, "-tls-cert"},
		{"plaintext on a host name", nil, map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(h:1)/d", "ORDERD_GRPC_ADDR": "orderd.internal:50051"}, "ORDERD_GRPC_ADDR"},
		{"certificate without key", []string{"-mysql-dsn=u@tcp(h:1)/d", "-tls-cert=c.pem"}, nil, "-tls-cert/tls-key"},
		{"client CA without TLS", []string{"-mysql-dsn=u@tcp(h:1)/d", "-tls-client-ca=ca.pem"}, nil, "-tls-client-ca"},
		{"plaintext and TLS", []string{"-mysql-dsn=u@tcp(h:1)/d", "-tls-cert=c.pem", "-tls-key=k.pem", "-insecure-plaintext"}, nil, "-insecure-plaintext"},
		{"policy without identities", []string{"-mysql-dsn=u@tcp(h:1)/d", "-policy-file=p.json"}, nil, "-policy-file"},
		{"negative rate", []string{"-mysql-dsn=u@tcp(h:1)/d", "-issue-token-rate=-1"}, nil, "-issue-token-rate"},
		{"no burst", []string{"-mysql-dsn=u@tcp(h:1)/d", "-issue-token-burst=0"}, nil, "-issue-token-burst"},
		{"negative janitor rate", []string{"-mysql-dsn=u@tcp(h:1)/d", "-janitor-rate=-1"}, nil, "-janitor-rate"},
		{"negative janitor rate in the environment", nil, map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(h:1)/d", "ORDERD_JANITOR_RATE": "-100"}, "ORDERD_JANITOR_RATE"},
		{"NaN janitor rate", []string{"-mysql-dsn=u@tcp(h:1)/d", "-janitor-rate=NaN"}, nil, "-janitor-rate"},
		{"negative cap", nil, map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(h:1)/d", "ORDERD_MAX_OUTSTANDING_TOKENS": "-3"}, "ORDERD_MAX_OUTSTANDING_TOKENS"},
		{"bad boolean in the environment", nil, map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(h:1)/d", "ORDERD_INSECURE_PLAINTEXT": "maybe"}, "ORDERD_INSECURE_PLAINTEXT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("orderd", tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:50051": true, "127.1.2.3:1": true, "[::1]:50051": true, "localhost:50051": true, "LOCALHOST:1": true,
		":50051": false, "0.0.0.0:50051": false, "[::]:50051": false, "10.0.0.1:50051": false, "orderd:50051": false, "nonsense": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestRedactedDSN(t *testing.T) {
	got := redactedDSN("orderd:s3cret@tcp(db:3306)/orderd")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "db:3306") {
		t.Errorf("redactedDSN = %q", got)
	}
}
