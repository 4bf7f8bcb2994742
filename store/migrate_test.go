package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// openStore opens a store on dsn with a clock fixed at t0.
func openStore(tb testing.TB, dsn string) *store.Store {
	tb.Helper()
	s, err := store.Open(tb.Context(), dsn, store.Options{Now: storetest.NewClock(t0).Now})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// checkStatus checks that the first migration is 0001_init.sql and that
// every migration was applied at (or, when applied is zero, is pending).
func checkStatus(tb testing.TB, s *store.Store, applied time.Time) []store.Migration {
	tb.Helper()
	status, err := s.MigrationStatus(tb.Context())
	if err != nil {
		tb.Fatalf("MigrationStatus: %v", err)
	}
	if len(status) == 0 || status[0].Version != 1 || status[0].Name != "0001_init.sql" {
		tb.Fatalf("MigrationStatus = %+v, want 0001_init.sql first", status)
	}
	for _, m := range status {
		if !m.Applied.Equal(applied) {
			tb.Errorf("migration %s applied at %v, want %v", m.Name, m.Applied, applied)
		}
	}
	return status
}

func TestMigrate(t *testing.T) {
	t.Run("a second run applies nothing", func(t *testing.T) {
		e := newEnv(t, store.Options{}) // migrated once at t0
		e.clock.Advance(time.Hour)
		done, err := e.s.Migrate(t.Context())
		if err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if len(done) != 0 {
			t.Errorf("second Migrate applied %+v, want nothing", done)
		}
		status := checkStatus(t, e.s, t0)
		if n := e.count(t, "schema_migrations", ""); n != len(status) {
			t.Errorf("schema_migrations rows = %d, want %d", n, len(status))
		}
	})

	t.Run("a fresh database gets every migration once", func(t *testing.T) {
		dsn := storetest.NewDatabase(t)
		s := openStore(t, dsn)
		pending := checkStatus(t, s, time.Time{})

		done, err := s.Migrate(t.Context())
		if err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		want := make([]store.Migration, len(pending))
		for i, m := range pending {
			want[i] = store.Migration{Version: m.Version, Name: m.Name, Applied: t0}
		}
		if d := cmp.Diff(want, done); d != "" {
			t.Errorf("Migrate applied (-want +got):\n%s", d)
		}
		checkStatus(t, s, t0)
		if done, err := s.Migrate(t.Context()); err != nil || len(done) != 0 {
			t.Errorf("second Migrate = %+v, %v; want nothing applied", done, err)
		}
	})

	t.Run("concurrent runs apply each migration once", func(t *testing.T) {
		dsn := storetest.NewDatabase(t)
		stores := make([]*store.Store, 4)
		for i := range stores {
			stores[i] = openStore(t, dsn)
		}
		applied := make([][]store.Migration, len(stores))
		errs := make([]error, len(stores))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() {
				<-start
				applied[i], errs[i] = s.Migrate(t.Context())
			})
		}
		close(start)
		wg.Wait()

		count := map[string]int{}
		for i := range stores {
			if errs[i] != nil {
				t.Errorf("Migrate %d: %v", i, errs[i])
			}
			for _, m := range applied[i] {
				count[m.Name]++
			}
		}
		status := checkStatus(t, stores[0], t0)
		want := map[string]int{}
		for _, m := range status {
			want[m.Name] = 1
		}
		if d := cmp.Diff(want, count); d != "" {
			t.Errorf("times each migration was applied (-want +got):\n%s", d)
		}
	})
}
