package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/store"
)

// bench is one benchmark run and everything it started.
type bench struct {
	cfg *config
	log io.Writer

	root, tmp string
	dsn       string
	pdb       *privateDB
	admin     *sql.DB // the server, no database selected
	dbName    string
	st        *store.Store
	db        *sql.DB // orderd's DSN parameters and pool size: the SQL floor's pool
	dbPID     string

	orderdBin string
	od        *orderdProc
	conns     []*grpc.ClientConn
	clients   []orderv1.OrderServiceClient

	skus  []string
	nonce string
	rep   *Report
	// rawRetries counts the floor's reruns after deadlocks and lock wait
	// timeouts (orderd's are its orderd_tx_retries_total).
	rawRetries atomic.Int64
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "orderbench: "+format+"\n", args...)
}

// run executes the whole benchmark and returns its report.
func (b *bench) run(ctx context.Context) (rep *Report, err error) {
	started := time.Now()
	b.rep = &Report{
		Started: started.UTC().Format(time.RFC3339),
		Machine: Machine{Cores: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(), LoadAvgStart: loadAvg()},
		Settings: Settings{Concurrency: b.cfg.Concurrency, DurationSec: b.cfg.Duration.Seconds(), WarmupSec: b.cfg.Warmup.Seconds(),
			Products: b.cfg.Products, GRPCConns: b.cfg.Conns, StormCallers: b.cfg.StormCallers, Scenarios: b.cfg.Scenarios,
			FloorTokenCap: b.cfg.FloorTokenCap},
	}
	var nb [3]byte
	rand.Read(nb[:])
	b.nonce = hex.EncodeToString(nb[:])
	defer func() {
		if cerr := b.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	if err := b.mainPhase(ctx); err != nil {
		return nil, err
	}
	if b.cfg.RoundTripCalls > 0 {
		b.logf("counting database round trips per call (%d calls each)", b.cfg.RoundTripCalls)
		if b.rep.RoundTrips, err = b.roundTrips(ctx, b.cfg.RoundTripCalls); err != nil {
			return nil, fmt.Errorf("round trips: %w", err)
		}
	}
	if b.cfg.ProfileDir != "" {
		if err := b.profile(ctx); err != nil {
			return nil, err
		}
	}
	if b.cfg.Growth {
		if err := b.growth(ctx); err != nil {
			return nil, err
		}
	}
	b.rep.Machine.LoadAvgEnd = loadAvg()
	b.rep.TotalSec = time.Since(started).Seconds()
	b.rep.Targets = targets(b.rep)
	return b.rep, nil
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.root, err = repoRoot(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "orderbench-"); err != nil {
		return err
	}
	b.rep.Settings.OrderdSource = "binary " + b.cfg.OrderdBin
	b.dsn = b.cfg.DSN
	if b.dsn == "" {
		b.logf("starting the private MariaDB (.data/bench-mysql, port %d)", b.cfg.DBPort)
		if b.pdb, b.dsn, err = startPrivateDB(ctx, b.root, b.cfg.DBPort, b.cfg.BufferPool); err != nil {
			return err
		}
		b.rep.Machine.PrivateDB = true
		if pid := b.pdb.pid(); pid > 0 {
			b.dbPID = strconv.Itoa(pid)
		}
	}
	if b.admin, b.dbName, err = openServer(b.dsn); err != nil {
		return err
	}
	if b.dbName == "" {
		return errors.New("-dsn names no database (…/DBNAME)")
	}
	if b.pdb != nil {
		// The private server's database is ours: start from empty tables.
		if _, err := b.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+b.dbName+"`"); err != nil {
			return fmt.Errorf("reset database: %w", err)
		}
		if _, err := b.admin.ExecContext(ctx, "CREATE DATABASE `"+b.dbName+"`"); err != nil {
			return fmt.Errorf("reset database: %w", err)
		}
	}
	if err := databaseInfo(ctx, b.admin, &b.rep.Machine); err != nil {
		return err
	}
	if b.orderdBin = b.cfg.OrderdBin; b.orderdBin == "" {
		b.rep.Settings.OrderdSource = sourceVersion(b.root)
		b.logf("building orderd (%s)", b.rep.Settings.OrderdSource)
		if b.orderdBin, err = buildOrderd(ctx, b.root, b.tmp); err != nil {
			return err
		}
	}
	if err := b.startOrderd(ctx, false); err != nil {
		return err
	}
	// orderd has migrated the schema; the floor uses the same tables,
	// through store.Open so that its DSN parameters are orderd's own.
	if b.st, err = store.Open(ctx, b.dsn, store.Options{}); err != nil {
		return err
	}
	b.db = b.st.DB()
	if b.skus, err = seedProducts(ctx, b.db, b.cfg.Products); err != nil {
		return err
	}
	if _, err := b.db.ExecContext(ctx, createNaive); err != nil {
		return fmt.Errorf("create naive_orders: %w", err)
	}
	return nil
}

// orderdArgs are orderd's flags: defaults but for the janitor (off unless
// the janitor phase) and the log level.
func (b *bench) orderdArgs(janitor bool) []string {
	args := []string{"-log-level=" + b.cfg.OrderdLogLevel}
	if janitor {
		args = append(args, "-janitor-interval=1s", "-janitor-batch=1000", "-expired-token-grace=0")
	} else {
		args = append(args, "-janitor-interval=0")
	}
	return append(args, b.cfg.OrderdArgs...)
}

// startOrderd (re)starts orderd and connects the callers to it.
func (b *bench) startOrderd(ctx context.Context, janitor bool) error {
	if err := b.stopOrderd(); err != nil {
		b.logf("orderd stopped with: %v", err)
	}
	args := b.orderdArgs(janitor)
	b.logf("starting orderd %v", args)
	od, err := startOrderd(ctx, b.orderdBin, b.tmp, b.cfg.OrderdLog, b.dsn, args)
	if err != nil {
		return err
	}
	b.od = od
	if !janitor {
		b.rep.Settings.OrderdArgs = args
	}
	for range b.cfg.Conns {
		conn, err := grpc.NewClient(od.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		b.conns = append(b.conns, conn)
		b.clients = append(b.clients, orderv1.NewOrderServiceClient(conn))
	}
	return nil
}

func (b *bench) stopOrderd() error {
	for _, c := range b.conns {
		c.Close()
	}
	b.conns, b.clients = nil, nil
	if b.od == nil {
		return nil
	}
	err := b.od.stop()
	if err != nil {
		err = fmt.Errorf("%w; its log:\n%s", err, b.od.logTail(10))
	}
	b.od = nil
	return err
}

func (b *bench) cleanup() error {
	var errs []error
	if err := b.stopOrderd(); err != nil {
		errs = append(errs, fmt.Errorf("stop orderd: %w", err))
	}
	if b.st != nil {
		b.st.Close()
	}
	if b.admin != nil {
		if b.pdb != nil && !b.cfg.KeepDB {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if _, err := b.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+b.dbName+"`"); err != nil {
				errs = append(errs, fmt.Errorf("drop database: %w", err))
			}
			cancel()
		}
		b.admin.Close()
	}
	if b.pdb != nil && !b.cfg.KeepDB {
		if err := b.pdb.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
	return errors.Join(errs...)
}

// snapshot is the state of the counters a measurement takes differences of.
type snapshot struct {
	at                           time.Time
	status                       map[string]int64
	orderdCPU, dbCPU, benchCPU   time.Duration
	busy                         time.Duration
	orderdOK, dbOK, benchOK, bOK bool
}

func (b *bench) snapshot(ctx context.Context) snapshot {
	s := snapshot{at: time.Now()}
	var err error
	if s.status, err = statusCounters(ctx, b.db); err != nil {
		b.logf("%v", err)
	}
	if b.od != nil {
		s.orderdCPU, err = procCPU(strconv.Itoa(b.od.pid()))
		s.orderdOK = err == nil
	}
	if b.dbPID != "" {
		s.dbCPU, err = procCPU(b.dbPID)
		s.dbOK = err == nil
	}
	s.benchCPU, err = procCPU("self")
	s.benchOK = err == nil
	s.busy, err = systemBusy()
	s.bOK = err == nil
	return s
}

// measure runs one scenario at one concurrency and fills a Result with its
// latencies and the costs measured around it.
func (b *bench) measure(ctx context.Context, scenario string, c, callers int, fn op) (*Result, error) {
	b.logf("%-10s c=%-3d running (%v + %v warm-up)", scenario, c, b.cfg.Duration, b.cfg.Warmup)
	if b.od != nil {
		if err := resetPeakRSS(strconv.Itoa(b.od.pid())); err != nil {
			b.rep.addNote("orderd peak RSS could not be reset per scenario (" + err.Error() + "): it is the peak since orderd started")
		}
	}
	retries := func() float64 {
		n := float64(b.rawRetries.Load())
		if b.od != nil {
			v, err := b.od.metric(ctx, "orderd_tx_retries_total", "")
			if err != nil {
				b.logf("orderd_tx_retries_total: %v", err)
			}
			n += v
		}
		return n
	}
	retriesBefore := retries()
	before := b.snapshot(ctx)
	t := runLoad(ctx, c, b.cfg.Warmup, b.cfg.Duration, fn)
	after := b.snapshot(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	txRetries := int(retries() - retriesBefore)
	r := &Result{
		Scenario: scenario, Concurrency: c, Callers: callers, Ops: t.ops, AllOps: t.allOps,
		Seconds: t.window.Seconds(), Throughput: float64(t.ops) / t.window.Seconds(),
		Samples: len(t.lat), P50Ms: ms(percentile(t.lat, 0.50)), P99Ms: ms(percentile(t.lat, 0.99)), MaxMs: ms(percentile(t.lat, 1)),
		Duplicates: t.dups, WrongAnswers: t.wrong, Exhausted: t.exhausted, LoadAvg: loadAvg(), TxRetries: txRetries,
	}
	if len(t.errs) > 0 {
		r.Errors, r.ErrorExamples = t.errs, t.firstErr
	}
	if t.allOps > 0 {
		per1k := func(d time.Duration) *float64 { return ptr(d.Seconds() / float64(t.allOps) * 1000) }
		if q, ok := after.status["questions"]; ok {
			// Minus the SHOW STATUS of the second snapshot.
			r.StatementsPerOp = ptr(float64(q-before.status["questions"]-1) / float64(t.allOps))
			r.ComPerOp = map[string]float64{}
			for k, v := range after.status {
				if k == "questions" || k == "com_show_status" {
					continue
				}
				if d := v - before.status[k]; d > 0 {
					r.ComPerOp[k] = float64(d) / float64(t.allOps)
				}
			}
		}
		var ours time.Duration
		if before.orderdOK && after.orderdOK && !isFloor(scenario) {
			r.OrderdCPUPer1k = per1k(after.orderdCPU - before.orderdCPU)
		}
		if before.orderdOK && after.orderdOK {
			ours += after.orderdCPU - before.orderdCPU
		}
		if before.dbOK && after.dbOK {
			r.DBCPUPer1k = per1k(after.dbCPU - before.dbCPU)
			ours += after.dbCPU - before.dbCPU
		}
		if before.benchOK && after.benchOK {
			r.BenchCPUPer1k = per1k(after.benchCPU - before.benchCPU)
			ours += after.benchCPU - before.benchCPU
		}
		if before.bOK && after.bOK && before.dbOK {
			wall := after.at.Sub(before.at).Seconds()
			r.OtherCPUCores = ptr(max(0, (after.busy-before.busy-ours).Seconds()/wall))
		}
	}
	if b.od != nil && r.OrderdCPUPer1k != nil {
		if kb, err := procStatusKB(strconv.Itoa(b.od.pid()), "VmHWM"); err == nil {
			r.OrderdPeakRSSMB = ptr(float64(kb) / 1024)
		}
	}
	b.logf("%-10s c=%-3d %8.1f ops/s  p50 %6.2f ms  p99 %7.2f ms  errors %v  dups %d", scenario, c, r.Throughput, r.P50Ms, r.P99Ms, t.errs, t.dups)
	for k, v := range t.firstErr {
		b.logf("  first %s: %s", k, v)
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ptr[T any](v T) *T { return &v }

// client returns the gRPC client of a worker's connection.
func (b *bench) client(w *worker) orderv1.OrderServiceClient {
	return b.clients[w.id%len(b.clients)]
}

// profile runs flow under the CPU profiler of a fresh orderd and saves its
// CPU and allocation profiles.
func (b *bench) profile(ctx context.Context) error {
	if err := os.MkdirAll(b.cfg.ProfileDir, 0o755); err != nil {
		return err
	}
	if err := b.startOrderd(ctx, false); err != nil {
		return err
	}
	c := b.cfg.GrowthConc
	secs := max(5, int(b.cfg.Duration.Seconds()))
	b.logf("profiling orderd under flow c=%d for %ds", c, secs)
	warm := time.Second
	type res struct {
		t *tally
	}
	done := make(chan res, 1)
	go func() {
		done <- res{runLoad(ctx, c, warm, time.Duration(secs+1)*time.Second, b.flowOp)}
	}()
	time.Sleep(warm)
	cpu, err := b.od.fetch(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(secs))
	t := (<-done).t
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	allocs, err := b.od.fetch(ctx, "/debug/pprof/allocs")
	if err != nil {
		return fmt.Errorf("allocs profile: %w", err)
	}
	p := &Profile{Concurrency: c, Seconds: secs, Throughput: float64(t.ops) / t.window.Seconds(),
		OrdersSinceStart: t.allOps,
		CPUFile:          filepath.Join(b.cfg.ProfileDir, "orderd-cpu.pprof"),
		AllocsFile:       filepath.Join(b.cfg.ProfileDir, "orderd-allocs.pprof")}
	if err := os.WriteFile(p.CPUFile, cpu, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(p.AllocsFile, allocs, 0o644); err != nil {
		return err
	}
	b.rep.Profile = p
	return b.startOrderd(ctx, false)
}
