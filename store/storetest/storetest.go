// Package storetest gives tests a real, empty, migrated orderd database.
//
// The server is ORDERD_TEST_MYSQL_DSN when set (any MySQL 8 / MariaDB 10.11
// user allowed to create databases), else a private throwaway MariaDB
// started by scripts/mysql-private under .data/test-mysql on port
// ORDERD_TEST_MYSQL_PORT (default 33062). Each test gets its own randomly
// named database, dropped when the test ends. There is no skip: a test that
// needs a database fails when none can be had.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/orderd/orderd/store"
)

var (
	serverOnce sync.Once
	serverDSN  string
	serverErr  error
)

// ServerDSN returns the DSN of the test server (no database named),
// starting the private server if needed.
func ServerDSN(tb testing.TB) string {
	tb.Helper()
	serverOnce.Do(func() {
		if dsn := os.Getenv("ORDERD_TEST_MYSQL_DSN"); dsn != "" {
			serverDSN = dsn
			return
		}
		serverDSN, serverErr = startPrivate()
	})
	if serverErr != nil {
		tb.Fatalf("no test database server: %v", serverErr)
	}
	return serverDSN
}

func startPrivate() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	port := os.Getenv("ORDERD_TEST_MYSQL_PORT")
	if port == "" {
		port = "33062"
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "mysql-private"), "start", filepath.Join(root, ".data", "test-mysql"), port)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/mysql-private: %w (set ORDERD_TEST_MYSQL_DSN to use an existing server)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "mysql-private")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("scripts/mysql-private not found above the working directory")
		}
		dir = parent
	}
}

// NewDatabase creates an empty database with a random name on the test
// server, drops it when the test ends, and returns its DSN.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(ServerDSN(tb))
	if err != nil {
		tb.Fatalf("parse test DSN: %v", err)
	}
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		tb.Fatalf("open test server: %v", err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "orderd_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// New returns a Store on a fresh migrated database, closed when the test
// ends, and the database's DSN for direct checks.
func New(tb testing.TB, opts store.Options) (*store.Store, string) {
	tb.Helper()
	dsn := NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, dsn, opts)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return s, dsn
}

// DB opens a plain connection pool on dsn, closed when the test ends.
func DB(tb testing.TB, dsn string) *sql.DB {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatalf("parse DSN: %v", err)
	}
	cfg.ParseTime = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		tb.Fatalf("open %s: %v", dsn, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// Server is a private database server owned by one test, which may stop
// and restart it (outage tests). It is stopped when the test ends.
type Server struct {
	tb   testing.TB
	dir  string
	port string
}

// NewServer initialises and starts a private server in a temporary
// directory on a free port. It takes a few seconds.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	s := &Server{tb: tb, dir: tb.TempDir(), port: port}
	tb.Cleanup(s.Stop)
	s.Start()
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + s.port }

// DSN returns the DSN of database db on the server, creating it.
func (s *Server) DSN(db string) string {
	s.tb.Helper()
	return strings.TrimSpace(s.script("start", s.dir, s.port, db))
}

// Start starts the server (again); it keeps its data.
func (s *Server) Start() {
	s.tb.Helper()
	s.script("start", s.dir, s.port)
}

// Stop shuts the server down and waits until it has exited.
func (s *Server) Stop() {
	s.tb.Helper()
	s.script("stop", s.dir)
}

func (s *Server) script(args ...string) string {
	s.tb.Helper()
	root, err := repoRoot()
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "mysql-private"), args...)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		s.tb.Fatalf("scripts/mysql-private %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}
