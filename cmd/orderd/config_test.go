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
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MySQLDSN != dsn || c.TokenTTL != 2*time.Hour || c.GRPCAddr != "0.0.0.0:6000" || c.MetricsAddr != "127.0.0.1:9090" {
		t.Errorf("config = %+v", c)
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

func TestRedactedDSN(t *testing.T) {
	got := redactedDSN("orderd:s3cret@tcp(db:3306)/orderd")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "db:3306") {
		t.Errorf("redactedDSN = %q", got)
	}
}
