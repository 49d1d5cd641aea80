package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"trackd.dev/trackd/plugins/postgres/pgtest"
	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/host"
)

const (
	benchCalls = 30_000 // calls of the measured run: about 55,000 rows
	benchWarm  = 1_000  // calls before it, which make the tables and columns
)

// benchBatchSizes are the sizes of the batches, in turn: the daemon hands the
// plugin batches of up to batch_size calls, fewer when traffic is light.
var benchBatchSizes = []int{100, 200, 300, 400, 500}

// BenchmarkPostgres measures, in one run against one server, rows per second
// written by the plugin binary through the real handshake, for a realistic
// mix of calls (of every ten, seven track calls, two page calls and one
// identify call, each about 1 KB as analytics.js sends them) in batches of
// 100 to 500: with 4 plugin calls in flight (the daemon's default
// max_in_flight) and with one at a time. The yardstick is the same rows
// copied straight into tables of the same layout with COPY, one connection,
// one transaction per batch, before and after the plugin (the higher rate
// counts). It prints the summary line for BENCHMARKS.md: the rates, their
// ratios, and what a call cost the plugin and the database in processor time
// and disk.
func BenchmarkPostgres(b *testing.B) {
	for range b.N {
		benchPostgres(b)
	}
}

// benchInFlight is the daemon's default max_in_flight.
const benchInFlight = 4

func benchPostgres(b *testing.B) {
	srv := pgtest.Start(b)
	bin := destinationtest.Build(b, pkg)
	warm, calls := benchMix(b, 0, benchWarm), benchMix(b, benchWarm, benchCalls)
	batches := benchBatches(calls)

	copyBefore := benchCopy(b, srv, "bench_copy_before", warm, batches)
	serial := benchPlugin(b, srv, bin, "bench_plugin_serial", warm, batches, 1)
	parallel := benchPlugin(b, srv, bin, "bench_plugin", warm, batches, benchInFlight)
	copyAfter := benchCopy(b, srv, "bench_copy_after", warm, batches)
	yardstick := max(copyBefore.rate, copyAfter.rate)
	for _, r := range []int64{serial.rows, copyBefore.rows, copyAfter.rows} {
		if r != parallel.rows {
			b.Fatalf("the plugin wrote %d and %d rows, COPY %d and %d: not the same rows", parallel.rows, serial.rows, copyBefore.rows, copyAfter.rows)
		}
	}
	bytes := benchBytes(b, srv, "bench_plugin")

	b.ReportMetric(parallel.rate, "rows/s")
	b.ReportMetric(serial.rate, "serial-rows/s")
	b.ReportMetric(yardstick, "copy-rows/s")
	b.ReportMetric(parallel.rate/yardstick, "ratio")
	b.ReportMetric(parallel.pluginCPU, "plugin-cpu-µs/call")
	b.ReportMetric(parallel.dbCPU, "db-cpu-µs/call")
	fmt.Printf("bench: postgres %.0f rows/s with %d calls in flight (%.0f calls/s, %.2f rows a call, batches of 100..500), %.0f rows/s one call at a time; plain COPY of the same rows on one connection %.0f rows/s (the higher of %.0f before and %.0f after); ratio %.2f (%.2f one at a time); per call: plugin cpu %.0f µs, database cpu %.0f µs (COPY alone %.0f µs), %.0f bytes on disk with indexes\n",
		parallel.rate, benchInFlight, parallel.calls, float64(parallel.rows)/benchCalls, serial.rate, yardstick, copyBefore.rate, copyAfter.rate,
		parallel.rate/yardstick, serial.rate/yardstick, parallel.pluginCPU, parallel.dbCPU, min(copyBefore.dbCPU, copyAfter.dbCPU), float64(bytes)/float64(benchCalls+benchWarm))
}

// run is what one measured run wrote, how fast, and at what cost.
type run struct {
	rows      int64
	rate      float64 // rows per second
	calls     float64 // calls per second
	pluginCPU float64 // µs per call, in the plugin
	dbCPU     float64 // µs per call, in the database
}

// benchPlugin starts the plugin on schema, makes its tables with warm, and
// measures it delivering batches, inFlight calls at a time.
func benchPlugin(b *testing.B, srv *pgtest.Server, bin, schema string, warm []sdk.Event, batches [][]sdk.Event, inFlight int) run {
	plugin := destinationtest.Start(b, bin, map[string]any{"dsn": srv.DSN, "schema": schema})
	benchDeliver(b, plugin, benchBatches(warm), inFlight)
	rowsBefore := benchRows(b, srv, schema)
	pluginCPU, dbCPU := benchCPU(b, srv)
	start := time.Now()
	benchDeliver(b, plugin, batches, inFlight)
	elapsed := time.Since(start)
	pluginCPUAfter, dbCPUAfter := benchCPU(b, srv)
	plugin.Kill()
	rows := benchRows(b, srv, schema) - rowsBefore
	return run{
		rows: rows, rate: float64(rows) / elapsed.Seconds(), calls: benchCalls / elapsed.Seconds(),
		pluginCPU: perCall(pluginCPUAfter - pluginCPU), dbCPU: perCall(dbCPUAfter - dbCPU),
	}
}

func perCall(d time.Duration) float64 { return float64(d.Microseconds()) / benchCalls }

// benchMix makes calls from, from+1, ... of the realistic mix, as the
// daemon hands them over. Each identify call has a userId of its own.
func benchMix(b *testing.B, from, n int) []sdk.Event {
	const ctx = `{"ip":"203.0.113.%d","locale":"en-US","library":{"name":"analytics.js","version":"next-1.64.0"},` +
		`"page":{"path":"/checkout/complete","url":"https://shop.example.com/checkout/complete"},` +
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"}`
	const times = `"sentAt":"2024-01-24T11:59:02.410Z","originalTimestamp":"2024-01-24T11:59:02.403Z"`
	at := time.Date(2024, 1, 24, 11, 59, 2, 403_000_000, time.UTC)
	calls := make([]sdk.Event, n)
	for j := range calls {
		i := from + j
		c := destinationtest.Call{
			MessageID:   fmt.Sprintf("ajs-next-1706097542403-%08x-9b1d-4c55-8a7e-0b6f2d9c1e44", i),
			AnonymousID: fmt.Sprintf("507f191e810c19729de8%04x", i%65536),
			UserID:      fmt.Sprintf("user_%07d", i),
			Timestamp:   at,
			ReceivedAt:  at.Add(time.Duration(i) * time.Millisecond),
			Context:     fmt.Sprintf(ctx, i%250),
		}
		switch i % 10 {
		case 3, 7:
			c.Type, c.Name, c.UserID = sdk.TypePage, "Product", ""
			c.Properties = fmt.Sprintf(`{"path":"/products/%d","referrer":"https://www.google.com/","search":"","title":"Monopoly: 3rd Edition - Google Store","url":"https://shop.example.com/products/%d"}`, i%5000, i%5000)
		case 9:
			c.Type = sdk.TypeIdentify
			c.Traits = fmt.Sprintf(`{"email":"user_%07d@example.com","firstName":"Ada","lastName":"Lovelace","plan":"pro","createdAt":"2023-06-01T10:00:00Z","address":{"city":"London","country":"GB"},"logins":%d}`, i, i%1000)
		default:
			c.Type, c.Name = sdk.TypeTrack, "Order Completed"
			c.Properties = fmt.Sprintf(`{"checkout_id":"fksdjfsdjfisjf9sdfjsd9f","order_id":"50314b8e9bcf%012d","affiliation":"Google Store","total":%d.50,"subtotal":22.50,`+
				`"revenue":%d.00,"shipping":3,"tax":2,"discount":2.5,"coupon":"hasbros","currency":"usd","products":[`+
				`{"product_id":"507f1f77bcf86cd799439011","sku":"45790-32","name":"Monopoly: 3rd Edition","price":19,"quantity":1,"category":"Games"},`+
				`{"product_id":"505bd76785ebb509fc183733","sku":"46493-32","name":"Uno Card Game","price":3,"quantity":2,"category":"Games"}]}`,
				i, 20+i%80, 20+i%80)
		}
		calls[j] = withFields(destinationtest.Event(b, c), times)
	}
	return calls
}

// benchBatches cuts calls into batches of benchBatchSizes in turn.
func benchBatches(calls []sdk.Event) [][]sdk.Event {
	var out [][]sdk.Event
	for i := 0; len(calls) > 0; i++ {
		n := min(benchBatchSizes[i%len(benchBatchSizes)], len(calls))
		out = append(out, calls[:n])
		calls = calls[n:]
	}
	return out
}

// benchDeliver hands the batches to the plugin, inFlight plugin calls at a
// time, as the daemon does up to a destination's max_in_flight.
func benchDeliver(b *testing.B, plugin *host.Client, batches [][]sdk.Event, inFlight int) {
	next := make(chan []sdk.Event)
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for batch := range next {
				results, err := plugin.Deliver(b.Context(), batch)
				if err != nil {
					b.Error(err)
					continue
				}
				for i, r := range results {
					if r.Status != sdk.StatusOK {
						b.Errorf("call %s: %v (%s)", batch[i].MessageID, r.Status, r.Reason)
						break
					}
				}
			}
		})
	}
	for _, batch := range batches {
		next <- batch
	}
	close(next)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// benchCopy copies the rows the plugin writes for batches straight into the
// tables of schema, made as the plugin makes them (warm makes them), with
// one COPY per table and one transaction per batch. The rows are laid out
// before the clock starts: only the database's work is timed.
func benchCopy(b *testing.B, srv *pgtest.Server, schema string, warm []sdk.Event, batches [][]sdk.Event) run {
	ctx := b.Context()
	pool, err := pgxpool.New(ctx, srv.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	p := &Postgres{cfg: settings{Schema: schema, Timeout: time.Minute}, pool: pool, lockKey: 1}
	layout := func(calls []sdk.Event) []load {
		var cs []call
		for i, e := range calls {
			rows, err := p.names.rows(e)
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, call{index: i, rows: rows})
		}
		if err := p.ensure(ctx, needs(cs)); err != nil {
			b.Fatal(err)
		}
		return p.plan(group(cs))
	}
	if err := p.cat.loadOnce(ctx, pool, schema); err != nil {
		b.Fatal(err)
	}
	if err := p.copyIn(ctx, layout(warm)); err != nil {
		b.Fatal(err)
	}
	var planned [][]load
	for _, batch := range batches {
		planned = append(planned, layout(batch))
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	_, cpuBefore := benchCPU(b, srv)
	start := time.Now()
	var rows int64
	for _, loads := range planned {
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, l := range loads {
				names := make([]string, len(l.cols))
				for j, c := range l.cols {
					names[j] = c.name
				}
				n, err := tx.CopyFrom(ctx, pgx.Identifier{schema, l.name}, names, pgx.CopyFromRows(l.rows))
				if err != nil {
					return err
				}
				rows += n
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	_, cpuAfter := benchCPU(b, srv)
	return run{rows: rows, rate: float64(rows) / elapsed.Seconds(), calls: benchCalls / elapsed.Seconds(), dbCPU: perCall(cpuAfter - cpuBefore)}
}

// benchRows counts the rows of the schema's tables.
func benchRows(b *testing.B, srv *pgtest.Server, schema string) int64 {
	return benchSum(b, srv, `SELECT coalesce(sum((xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint), 0)
		FROM information_schema.tables WHERE table_schema = $1`, schema)
}

// benchBytes is the disk space of the schema's tables, indexes included.
func benchBytes(b *testing.B, srv *pgtest.Server, schema string) int64 {
	return benchSum(b, srv, `SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', table_schema, table_name))), 0)::bigint
		FROM information_schema.tables WHERE table_schema = $1`, schema)
}

func benchSum(b *testing.B, srv *pgtest.Server, sql, schema string) int64 {
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, schema).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// benchCPU returns the processor time used so far by the plugin processes
// this test started and by the database server.
func benchCPU(b *testing.B, srv *pgtest.Server) (plugin, db time.Duration) {
	db, err := srv.CPU()
	if err != nil {
		b.Fatalf("database cpu: %v", err)
	}
	for _, pid := range pgtest.Children(os.Getpid()) {
		if t, err := pgtest.TreeCPU(pid); err == nil {
			plugin += t
		}
	}
	return plugin, db
}
