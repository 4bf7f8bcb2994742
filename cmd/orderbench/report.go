package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Report is everything one run measured; -json prints it as is.
type Report struct {
	Command  string    `json:"command"`
	Started  string    `json:"started"`
	TotalSec float64   `json:"total_sec"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Results  []*Result `json:"results"`
	Profile  *Profile  `json:"profile,omitempty"`
	// RoundTrips is nil when -round-trip-calls is 0.
	RoundTrips *RoundTrips `json:"round_trips,omitempty"`
	Growth     *Growth     `json:"growth,omitempty"`
	Targets    []Target    `json:"targets"`
	Notes      []string    `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores               int    `json:"cores"`
	CPUModel            string `json:"cpu_model"`
	GoVersion           string `json:"go_version"`
	LoadAvgStart        string `json:"loadavg_start"`
	LoadAvgEnd          string `json:"loadavg_end"`
	PrivateDB           bool   `json:"private_db"`
	DBVersion           string `json:"db_version"`
	FlushLogAtTrxCommit string `json:"innodb_flush_log_at_trx_commit"`
	SyncBinlog          string `json:"sync_binlog"`
	LogBin              string `json:"log_bin"`
	Doublewrite         string `json:"innodb_doublewrite"`
	BufferPoolBytes     string `json:"innodb_buffer_pool_size"`
}

// Settings are the run's parameters.
type Settings struct {
	Concurrency  []int    `json:"concurrency"`
	DurationSec  float64  `json:"duration_sec"`
	WarmupSec    float64  `json:"warmup_sec"`
	Products     int      `json:"products"`
	GRPCConns    int      `json:"grpc_conns"`
	StormCallers int      `json:"storm_callers"`
	Scenarios    []string `json:"scenarios"`
	OrderdArgs   []string `json:"orderd_args"`
	OrderdSource string   `json:"orderd_source"`
	// FloorTokenCap is the outstanding-token cap of the floor's token
	// INSERT (0: plain INSERT).
	FloorTokenCap int `json:"floor_token_cap"`
}

// Result is one scenario at one concurrency.
type Result struct {
	Scenario    string `json:"scenario"`
	Concurrency int    `json:"concurrency"`
	// Callers is how many calls were in flight: Concurrency, or
	// Concurrency × storm callers for storm and naive.
	Callers int `json:"callers"`
	// Ops are orders (storm: tokens; naive: request keys) started in the
	// measured window that succeeded; AllOps also counts warm-up and tail.
	Ops        int     `json:"ops"`
	AllOps     int     `json:"all_ops"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"ops_per_sec"`
	// Latency of each op (flow and raw: both steps; storm and naive:
	// each caller's call).
	Samples       int               `json:"latency_samples"`
	P50Ms         float64           `json:"p50_ms"`
	P99Ms         float64           `json:"p99_ms"`
	MaxMs         float64           `json:"max_ms"`
	Errors        map[string]int    `json:"errors,omitempty"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	// Duplicates are extra orders the answers revealed in the window;
	// DBDuplicates extra rows found in the table over the whole run.
	Duplicates int `json:"duplicates"`
	// WrongAnswers (storm) are duplicate calls answered with a definitive
	// rejection (NOT_FOUND, FAILED_PRECONDITION) although another call
	// placed the order: they should have waited and replayed it.
	WrongAnswers    int    `json:"wrong_answers"`
	DBDuplicates    *int   `json:"db_duplicates,omitempty"`
	DBDuplicateKeys *int   `json:"db_duplicate_keys,omitempty"`
	DBKeys          int    `json:"db_keys,omitempty"`
	DuplicateCheck  string `json:"duplicate_check,omitempty"`
	Exhausted       bool   `json:"tokens_exhausted,omitempty"`
	// TxRetries counts transactions rerun after a deadlock or lock wait
	// timeout during the run (orderd: orderd_tx_retries_total; floor: its
	// own reruns).
	TxRetries int `json:"tx_retries"`
	// Floor is the SQL floor scenario this one is compared with.
	Floor                string   `json:"floor,omitempty"`
	FloorThroughputRatio *float64 `json:"floor_throughput_ratio,omitempty"`
	FloorP99Ratio        *float64 `json:"floor_p99_ratio,omitempty"`
	// StatementsPerOp is the delta of the server's Questions per op;
	// ComPerOp its Com_* counters per op.
	StatementsPerOp *float64           `json:"db_statements_per_op,omitempty"`
	ComPerOp        map[string]float64 `json:"com_per_op,omitempty"`
	OrderdCPUPer1k  *float64           `json:"orderd_cpu_sec_per_1k,omitempty"`
	DBCPUPer1k      *float64           `json:"db_cpu_sec_per_1k,omitempty"`
	BenchCPUPer1k   *float64           `json:"bench_cpu_sec_per_1k,omitempty"`
	OtherCPUCores   *float64           `json:"other_cpu_cores,omitempty"`
	OrderdPeakRSSMB *float64           `json:"orderd_peak_rss_mb,omitempty"`
	LoadAvg         string             `json:"loadavg_after"`
	Notes           []string           `json:"notes,omitempty"`
}

// Growth is the growth phase: flow on the grown tables, then with the
// janitor purging the expired tokens.
type Growth struct {
	Concurrency            int              `json:"concurrency"`
	Orders                 int              `json:"orders"`
	Tokens                 int              `json:"expired_tokens"`
	FillSec                float64          `json:"fill_sec"`
	DirtyPagesAfterFill    int64            `json:"dirty_pages_after_fill"`
	SettleSec              float64          `json:"flush_wait_sec"`
	RowsBefore             map[string]int64 `json:"rows_before"`
	RowsAfter              map[string]int64 `json:"rows_after"`
	Empty                  *Result          `json:"empty"`
	Grown                  *Result          `json:"grown"`
	GrownThroughputRatio   *float64         `json:"grown_throughput_ratio"`
	GrownP99Ratio          *float64         `json:"grown_p99_ratio"`
	Janitor                *Result          `json:"janitor"`
	JanitorThroughputRatio *float64         `json:"janitor_throughput_ratio"`
	JanitorP99Ratio        *float64         `json:"janitor_p99_ratio"`
	ExpiredBefore          int64            `json:"expired_tokens_before"`
	ExpiredAfter           int64            `json:"expired_tokens_after_run"`
	JanitorDeletedMetric   float64          `json:"janitor_deleted_metric_after_run"`
	// PurgeRowsPerSec is the janitor's pace: expired tokens purged from
	// orderd's start to the end of the run, per second.
	PurgeRowsPerSec float64 `json:"purge_rows_per_sec"`
}

// Profile is where the profiles of orderd under flow were written.
type Profile struct {
	Concurrency      int     `json:"concurrency"`
	Seconds          int     `json:"seconds"`
	Throughput       float64 `json:"ops_per_sec"`
	OrdersSinceStart int     `json:"orders"`
	CPUFile          string  `json:"cpu_file"`
	AllocsFile       string  `json:"allocs_file"`
}

// Target is one goal and whether the run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func (r *Report) addNote(n string) {
	if !slices.Contains(r.Notes, n) {
		r.Notes = append(r.Notes, n)
	}
}

func (r *Report) find(scenario string, c int) *Result {
	for _, x := range r.Results {
		if x.Scenario == scenario && x.Concurrency == c {
			return x
		}
	}
	return nil
}

// targets evaluates the goals that the run has the data for.
func targets(r *Report) []Target {
	var ts []Target
	for _, c := range []int{16, 64} {
		if f := r.find(scFlow, c); f != nil && f.FloorThroughputRatio != nil {
			ts = append(ts, Target{Name: fmt.Sprintf("flow throughput at c%d vs raw SQL floor", c), Want: ">= 0.85",
				Got: f2(*f.FloorThroughputRatio), Met: *f.FloorThroughputRatio >= 0.85})
		}
	}
	if p := r.find(scPlace, 16); p != nil && p.FloorP99Ratio != nil {
		ts = append(ts, Target{Name: "PlaceOrder p99 at c16 vs raw floor p99 (place vs raw-place)", Want: "<= 1.5",
			Got: f2(*p.FloorP99Ratio), Met: *p.FloorP99Ratio <= 1.5})
	}
	var storms, dups, dbDups, wrong int
	for _, x := range r.Results {
		if x.Scenario == scStorm {
			storms++
			dups += x.Duplicates
			wrong += x.WrongAnswers
			if x.DBDuplicates != nil {
				dbDups += *x.DBDuplicates
			}
		}
	}
	if storms > 0 {
		ts = append(ts, Target{Name: "storm: exactly one order per token", Want: "0 duplicates",
			Got: fmt.Sprintf("%d in answers, %d in the orders table", dups, dbDups), Met: dups == 0 && dbDups == 0})
		ts = append(ts, Target{Name: "storm: every duplicate call waits and gets the order (README semantics)", Want: "0 wrong answers",
			Got: fmt.Sprintf("%d calls answered NOT_FOUND/FAILED_PRECONDITION for a placed token", wrong), Met: wrong == 0})
	}
	if g := r.Growth; g != nil {
		if g.GrownThroughputRatio != nil {
			ts = append(ts, Target{Name: fmt.Sprintf("flow c%d with %d orders + %d expired tokens vs small tables", g.Concurrency, g.Orders, g.Tokens),
				Want: ">= 0.90", Got: f2(*g.GrownThroughputRatio), Met: *g.GrownThroughputRatio >= 0.9})
		}
		if g.JanitorThroughputRatio != nil {
			ts = append(ts, Target{Name: "flow while the janitor purges the backlog vs without", Want: ">= 0.80 (cost <= 20%)",
				Got: f2(*g.JanitorThroughputRatio), Met: *g.JanitorThroughputRatio >= 0.8})
		}
	}
	return ts
}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// opt formats an optional number with the given decimals, "–" if absent.
func opt(v *float64, decimals int) string {
	if v == nil {
		return "–"
	}
	return strconv.FormatFloat(*v, 'f', decimals, 64)
}

func errorsCell(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func dupCell(x *Result) string {
	switch x.Scenario {
	case scStorm, scNaive:
	default:
		return "–"
	}
	s := strconv.Itoa(x.Duplicates)
	if x.WrongAnswers > 0 {
		s += fmt.Sprintf(", %d wrong answers", x.WrongAnswers)
	}
	if x.DBDuplicates != nil {
		s += fmt.Sprintf(" (table: %d", *x.DBDuplicates)
		if x.DBDuplicateKeys != nil {
			s += fmt.Sprintf(" in %d of %d keys", *x.DBDuplicateKeys, x.DBKeys)
		} else {
			s += fmt.Sprintf(", %d tokens", x.DBKeys)
		}
		s += ")"
	}
	return s
}

const tableHeader = "| scenario | c | callers | ops/s | p50 ms | p99 ms | max ms | errors | tx retries | duplicates | thr / floor | p99 / floor | DB stmts/op | orderd CPU s/1k | DB CPU s/1k | bench CPU s/1k | other procs (cores) | orderd peak RSS MB |\n" +
	"|---|--:|--:|--:|--:|--:|--:|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"

func tableRow(x *Result) string {
	exh := ""
	if x.Exhausted {
		exh = "*"
	}
	return fmt.Sprintf("| %s | %d | %d | %.0f%s | %.2f | %.2f | %.2f | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		x.Scenario, x.Concurrency, x.Callers, x.Throughput, exh, x.P50Ms, x.P99Ms, x.MaxMs, errorsCell(x.Errors), x.TxRetries, dupCell(x),
		opt(x.FloorThroughputRatio, 2), opt(x.FloorP99Ratio, 2), opt(x.StatementsPerOp, 2),
		opt(x.OrderdCPUPer1k, 3), opt(x.DBCPUPer1k, 3), opt(x.BenchCPUPer1k, 3), opt(x.OtherCPUCores, 2), opt(x.OrderdPeakRSSMB, 0))
}

func writeMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "## orderbench %s\n\n", r.Started)
	fmt.Fprintf(&b, "`%s` — %.0f s in total.\n\n", r.Command, r.TotalSec)
	fmt.Fprintf(&b, "- Machine: %d cores (runtime.NumCPU), %s; %s; load average %s at start, %s at end.\n", m.Cores, m.CPUModel, m.GoVersion, m.LoadAvgStart, m.LoadAvgEnd)
	db := "the -dsn server"
	if m.PrivateDB {
		db = "private server (scripts/mysql-private)"
	}
	fmt.Fprintf(&b, "- Database: %s, %s; innodb_flush_log_at_trx_commit=%s, sync_binlog=%s, log_bin=%s, innodb_doublewrite=%s, innodb_buffer_pool_size=%s.\n",
		m.DBVersion, db, m.FlushLogAtTrxCommit, m.SyncBinlog, m.LogBin, m.Doublewrite, m.BufferPoolBytes)
	s := r.Settings
	fmt.Fprintf(&b, "- Each scenario at each concurrency: %.1f s measured after %.1f s warm-up; %d products; %d gRPC connection(s); storm and naive: %d callers per token/key; orderd (%s) %s; the floor issues tokens with the outstanding-token cap %d (0: plain INSERT).\n\n",
		s.DurationSec, s.WarmupSec, s.Products, s.GRPCConns, s.StormCallers, s.OrderdSource, strings.Join(s.OrderdArgs, " "), s.FloorTokenCap)
	b.WriteString(tableHeader)
	for _, x := range r.Results {
		b.WriteString(tableRow(x))
	}
	b.WriteString("\nops/s: orders per second (storm: tokens, naive: request keys); `*`: the pre-issued tokens ran out and the window was shortened. " +
		"Latency: the whole op (flow and raw: token and order; storm and naive: each caller's call). " +
		"thr / p99 / floor: flow vs raw, place vs raw-place at the same concurrency. " +
		"DB stmts/op: delta of the server's `Questions` per successful op, warm-up included. " +
		"CPU s/1k: CPU seconds per 1,000 ops (utime+stime from /proc); other procs: cores used by processes other than orderd, the database and orderbench.\n")

	var rts []*Result
	for _, x := range r.Results {
		if len(x.ComPerOp) > 0 && x.Scenario != scStorm && x.Scenario != scNaive {
			rts = append(rts, x)
		}
	}
	if len(rts) > 0 {
		b.WriteString("\n### Statements per op (server `Com_*` counters)\n\n| scenario | c | Questions/op | Com_* per op |\n|---|--:|--:|---|\n")
		for _, x := range rts {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(x.ComPerOp)) {
				if v := x.ComPerOp[k]; v >= 0.01 {
					parts = append(parts, fmt.Sprintf("%s %.2f", strings.TrimPrefix(k, "com_"), v))
				}
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", x.Scenario, x.Concurrency, opt(x.StatementsPerOp, 2), strings.Join(parts, ", "))
		}
	}

	if t := r.RoundTrips; t != nil {
		fmt.Fprintf(&b, "\n### Database round trips per call (counted on the wire, %d calls each, one at a time)\n\n"+
			"| call | orderd | floor |\n|---|--:|--:|\n"+
			"| IssueToken / token INSERT | %.2f | %.2f |\n| PlaceOrder (new order) / placement transaction | %.2f | %.2f |\n| PlaceOrder replay (same token again) | %.2f | – |\n",
			t.Calls, t.IssueToken, t.FloorIssue, t.PlaceOrder, t.FloorPlace, t.Replay)
	}

	if p := r.Profile; p != nil {
		fmt.Fprintf(&b, "\n### Profiles\n\nflow at c%d for %d s under the profiler: %.0f orders/s. CPU: `%s`, allocations since orderd started (%d orders): `%s` (`go tool pprof -top FILE`).\n",
			p.Concurrency, p.Seconds, p.Throughput, p.CPUFile, p.OrdersSinceStart, p.AllocsFile)
	}

	if g := r.Growth; g != nil {
		fmt.Fprintf(&b, "\n### Growth (flow at c%d)\n\n", g.Concurrency)
		fmt.Fprintf(&b, "flow-small ran just before the fill; then %d orders (with 2 lines and an outcome each) and %d expired unused tokens were pre-filled in %.1f s, "+
			"and the %d dirty pages it left flushed in %.1f s before flow-grown. Rows before: %s; after: %s. Each run has a fresh orderd.\n\n",
			g.Orders, g.Tokens, g.FillSec, g.DirtyPagesAfterFill, g.SettleSec, rowsCell(g.RowsBefore), rowsCell(g.RowsAfter))
		b.WriteString(tableHeader)
		for _, x := range []*Result{g.Empty, g.Grown, g.Janitor} {
			if x != nil {
				b.WriteString(tableRow(x))
			}
		}
		fmt.Fprintf(&b, "\n- Grown vs small tables: throughput ×%s, p99 ×%s.\n", opt(g.GrownThroughputRatio, 2), opt(g.GrownP99Ratio, 2))
		fmt.Fprintf(&b, "- With the janitor (-janitor-interval=1s -janitor-batch=1000 -expired-token-grace=0, default -janitor-rate) vs without: throughput ×%s, p99 ×%s.\n",
			opt(g.JanitorThroughputRatio, 2), opt(g.JanitorP99Ratio, 2))
		fmt.Fprintf(&b, "- Expired tokens: %d before the janitor run, %d after it (%d purged, %.0f rows/s); orderd_janitor_deleted_total{table=\"tokens\"} = %.0f at the end of the run.\n",
			g.ExpiredBefore, g.ExpiredAfter, g.ExpiredBefore-g.ExpiredAfter, g.PurgeRowsPerSec, g.JanitorDeletedMetric)
	}

	if len(r.Targets) > 0 {
		b.WriteString("\n### Targets\n\n| target | want | got | met |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, met)
		}
	}
	var notes []string
	notes = append(notes, r.Notes...)
	for _, x := range r.Results {
		for k, v := range x.ErrorExamples {
			notes = append(notes, fmt.Sprintf("%s c%d: first %s error: %s", x.Scenario, x.Concurrency, k, v))
		}
		for _, n := range x.Notes {
			notes = append(notes, fmt.Sprintf("%s c%d: %s", x.Scenario, x.Concurrency, n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n### Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rowsCell(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
