package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"trackd.dev/trackd/plugins/postgres/pgtest"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/publish"
)

// Invariants 1 and 10 with the warehouse: kill -9 of the daemon under load,
// twice, and a SIGTERM in between, then a restart; the warehouse holds
// exactly one row per call in each of its tables, whatever was delivered
// again after the crashes.
func TestPostgresKillNineUnderLoad(t *testing.T) {
	srv := pgtest.Start(t)
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(`
[destinations.warehouse]
plugin = %q
batch_size = 500
[destinations.warehouse.settings]
dsn = %q
schema = "analytics"
`, destinationtest.Build(t, "trackd.dev/trackd/plugins/postgres"), srv.DSN))
	d.start(t, "/readyz")
	others := publishOtherCalls(t, d.natsURL, 100)
	const total = 20000
	ids := publishEvents(t, d.natsURL, "pg", total)

	conn, err := pgx.Connect(t.Context(), srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	count := func(table string) int {
		t.Helper()
		var n int
		err := conn.QueryRow(t.Context(), fmt.Sprintf(`SELECT count(*) FROM analytics.%s`, pgx.Identifier{table}.Sanitize())).Scan(&n)
		if err != nil {
			// Not made yet.
			return 0
		}
		return n
	}
	waitRows := func(atLeast int) {
		t.Helper()
		waitForLong(t, fmt.Sprintf("%d rows in order_completed", atLeast), func() bool { return count("order_completed") >= atLeast })
	}

	waitRows(2000)
	d.kill9(t)
	d.start(t, "/readyz")
	waitRows(8000)
	if code := d.stop(t); code != 0 {
		t.Errorf("SIGTERM: exit code %d, want 0", code)
	}
	d.start(t, "/readyz")
	waitRows(14000)
	d.kill9(t)
	d.start(t, "/readyz")
	wantRows := map[string]int{
		"tracks": total, "order_completed": total,
		"identifies": others, "users": others, "pages": others, "screens": others, "groups": others, "aliases": others,
	}
	// The tables do not fill together (a call type's rows may be written
	// after another's), so each is waited for until it has its rows; then it
	// must have exactly those, so that a row written twice still fails.
	for table, want := range wantRows {
		waitForLong(t, fmt.Sprintf("%d rows in %s", want, table), func() bool { return count(table) >= want })
	}
	for table, want := range wantRows {
		var rows, distinct int
		err := conn.QueryRow(t.Context(), fmt.Sprintf(`SELECT count(*), count(DISTINCT id) FROM analytics.%s`, table)).Scan(&rows, &distinct)
		if err != nil {
			t.Fatal(err)
		}
		if rows != want || distinct != want {
			t.Errorf("%s holds %d rows (%d distinct ids), want exactly %d", table, rows, distinct, want)
		}
	}
	var found int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM analytics.order_completed WHERE id = ANY($1)`, ids).Scan(&found); err != nil {
		t.Fatal(err)
	}
	if found != total {
		t.Errorf("%d of the %d published track calls are in order_completed", found, total)
	}
	var revenue float64
	if err := conn.QueryRow(t.Context(), `SELECT revenue FROM analytics.order_completed WHERE id = 'pg-000051'`).Scan(&revenue); err != nil || revenue != 1.99 {
		t.Errorf("order_completed.revenue of pg-000051 = %v (%v), want 1.99", revenue, err)
	}
	if n := count("discards"); n != 0 {
		t.Errorf("discards holds %d rows, want none", n)
	}
}

// publishOtherCalls publishes n calls of each type other than track, and
// returns n.
func publishOtherCalls(t *testing.T, natsURL string, n int) int {
	t.Helper()
	_, js := connectJS(t, natsURL)
	client := publish.New(js, publish.Options{})
	ctx := t.Context()
	for i := range n {
		user, id := fmt.Sprintf("user-%d", i), func(typ string) string { return fmt.Sprintf("%s-%04d", typ, i) }
		calls := []func() (string, error){
			func() (string, error) {
				return client.Identify(ctx, publish.Identify{UserID: user, MessageID: id("identify"), Traits: map[string]any{"plan": "pro", "seats": i}})
			},
			func() (string, error) {
				return client.Page(ctx, publish.Page{AnonymousID: "a-" + user, Name: "Pricing", MessageID: id("page"), Properties: map[string]any{"path": "/pricing"}})
			},
			func() (string, error) {
				return client.Screen(ctx, publish.Screen{UserID: user, Name: "Home", MessageID: id("screen")})
			},
			func() (string, error) {
				return client.Group(ctx, publish.Group{UserID: user, GroupID: "g-1", MessageID: id("group"), Traits: map[string]any{"name": "Acme"}})
			},
			func() (string, error) {
				return client.Alias(ctx, publish.Alias{UserID: user, PreviousID: "a-" + user, MessageID: id("alias")})
			},
		}
		for _, call := range calls {
			if _, err := call(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if failed := client.Close(ctx); len(failed) > 0 {
		t.Fatalf("%d publishes failed, e.g. %s: %v", len(failed), failed[0].MessageID, failed[0].Err)
	}
	return n
}
