package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"trackd.dev/trackd/plugins/postgres/pgtest"
	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/host"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/postgres"

// warehouse is a schema of a test server, the plugin writing into it and the
// test's own connection to read it.
type warehouse struct {
	t      *testing.T
	srv    *pgtest.Server
	schema string
	plugin *host.Client
	conn   *pgx.Conn
}

// newWarehouse starts the plugin on schema of srv (a new server when nil).
func newWarehouse(t *testing.T, srv *pgtest.Server, schema string) *warehouse {
	t.Helper()
	if srv == nil {
		srv = pgtest.Start(t)
	}
	w := &warehouse{t: t, srv: srv, schema: schema}
	w.plugin = w.start()
	w.connect()
	return w
}

// connect opens the test's own connection, as a new one after a restart.
func (w *warehouse) connect() {
	w.t.Helper()
	conn, err := pgx.Connect(w.t.Context(), w.srv.DSN)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = conn.Close(w.t.Context()) })
	w.conn = conn
}

// start starts one more plugin process writing into the warehouse, as
// another daemon would.
func (w *warehouse) start() *host.Client {
	return destinationtest.Start(w.t, destinationtest.Build(w.t, pkg), map[string]any{"dsn": w.srv.DSN, "schema": w.schema})
}

func (w *warehouse) deliver(calls ...sdk.Event) []sdk.Result {
	w.t.Helper()
	return destinationtest.Deliver(w.t, w.plugin, calls)
}

// deliverOK delivers calls and fails the test unless every one is ok.
func (w *warehouse) deliverOK(calls ...sdk.Event) {
	w.t.Helper()
	destinationtest.CheckResults(w.t, w.deliver(calls...), slices.Repeat([]sdk.Result{sdk.OK()}, len(calls)))
}

// redeliveries is how many times deliverRetrying delivers again the calls
// that got a retry, and redeliveryPause how long it waits before each time:
// as the daemon backs off before a retry, and more than the second of idleness
// after which pgxpool pings a connection before handing it out, so that a
// connection that died with its server is found out by the ping and replaced,
// not used by the next try.
const (
	redeliveries    = 5
	redeliveryPause = 1500 * time.Millisecond
)

// deliverRetrying delivers batch through plugin and then, as the daemon
// would, delivers again the calls whose result is a retry, up to
// redeliveries times. It returns each call's last result: a drop stays a
// drop, and a call still retried after the last time stays a retry.
func deliverRetrying(t *testing.T, plugin *host.Client, batch []sdk.Event) []sdk.Result {
	t.Helper()
	results := destinationtest.Deliver(t, plugin, batch)
	for try := 1; try <= redeliveries; try++ {
		var again []int
		for i, r := range results {
			if r.Status == sdk.StatusRetry {
				again = append(again, i)
			}
		}
		if len(again) == 0 {
			break
		}
		t.Logf("redelivery %d of %d calls after a retry such as %q", try, len(again), results[again[0]].Reason)
		time.Sleep(redeliveryPause)
		calls := make([]sdk.Event, len(again))
		for j, i := range again {
			calls[j] = batch[i]
		}
		for j, r := range destinationtest.Deliver(t, plugin, calls) {
			results[again[j]] = r
		}
	}
	return results
}

// columns returns a table's columns and their types.
func (w *warehouse) columns(table string) map[string]string {
	w.t.Helper()
	rows, err := w.conn.Query(w.t.Context(), `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, w.schema, table)
	if err != nil {
		w.t.Fatal(err)
	}
	cols := map[string]string{}
	var name, typ string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { cols[name] = typ; return nil }); err != nil {
		w.t.Fatal(err)
	}
	return cols
}

// tables returns the names of the schema's tables.
func (w *warehouse) tables() []string {
	w.t.Helper()
	rows, err := w.conn.Query(w.t.Context(), `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, w.schema)
	if err != nil {
		w.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		w.t.Fatal(err)
	}
	return names
}

// query returns the rows of a query, the schema's name in place of "s".
func (w *warehouse) query(sql string, args ...any) []map[string]any {
	w.t.Helper()
	sql = strings.ReplaceAll(sql, " s.", " "+pgx.Identifier{w.schema}.Sanitize()+".")
	rows, err := w.conn.Query(w.t.Context(), sql, args...)
	if err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// one returns the one row of a query.
func (w *warehouse) one(sql string, args ...any) map[string]any {
	w.t.Helper()
	rows := w.query(sql, args...)
	if len(rows) != 1 {
		w.t.Fatalf("%s: %d rows, want 1: %v", sql, len(rows), rows)
	}
	return rows[0]
}

func (w *warehouse) count(table string) int64 {
	w.t.Helper()
	return w.one(`SELECT count(*) AS n FROM s.` + pgx.Identifier{table}.Sanitize())["n"].(int64)
}

// withFields adds top-level fields (`"sentAt":"..."`) to a call's JSON.
func withFields(e sdk.Event, fields string) sdk.Event {
	e.JSON = append([]byte("{"+fields+","), e.JSON[1:]...)
	return e
}

// checkColumns fails the test unless table has exactly the columns of want
// (name → data_type) besides the reserved ones of every call.
func checkColumns(t *testing.T, w *warehouse, table string, reserved []column, want map[string]string) {
	t.Helper()
	want = maps.Clone(want)
	if want == nil {
		want = map[string]string{}
	}
	for _, c := range reserved {
		want[c.name] = c.kind.sqlType()
	}
	got := w.columns(table)
	for name, typ := range want {
		if got[name] != typ {
			t.Errorf("%s.%s is %q, want %q", table, name, got[name], typ)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s has a column %s (%s) it should not", table, name, got[name])
		}
	}
}

var (
	t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
	t2 = t0.Add(2 * time.Minute)
)

// Every call type writes its tables, with the reserved columns, the context
// and the properties or traits as columns.
func TestCallTypes(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	ctxJSON := `{"ip":"10.0.0.1","page":{"url":"https://example.com/pricing"},"library":{"name":"analytics-go","version":"3.3.0"}}`
	track := withFields(destinationtest.Event(t, destinationtest.Track{
		Name: "Order Completed", MessageID: "m-track", UserID: "u1", AnonymousID: "a1",
		Timestamp: t0, ReceivedAt: t1, Context: ctxJSON,
		Properties: `{"revenue":9.99,"currency":"EUR","product":{"sku":"X-1","priceCents":999},"tags":["a",{"b":2}],"inStock":true,"id":"dropped","event":"dropped","coupon":null}`,
	}), `"sentAt":"2024-05-01T12:00:30Z","originalTimestamp":"2024-05-01T11:59:59.5Z"`)
	identify := destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypeIdentify, MessageID: "m-identify", UserID: "u1", Timestamp: t0, ReceivedAt: t1,
		Traits: `{"firstName":"Ada","email":"ada@example.com","address":{"city":"London"},"age":36}`,
	})
	anonymous := destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypeIdentify, MessageID: "m-identify-anon", AnonymousID: "a2", Traits: `{"firstName":"Grace"}`,
	})
	page := withFields(destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypePage, Name: "Pricing", MessageID: "m-page", AnonymousID: "a1", Context: ctxJSON,
		Properties: `{"url":"https://example.com/pricing","title":"Pricing","name":"dropped"}`,
	}), `"category":"Docs"`)
	screen := destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypeScreen, Name: "Home", MessageID: "m-screen", UserID: "u1", Properties: `{"orientation":"portrait"}`,
	})
	group := destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypeGroup, MessageID: "m-group", UserID: "u1", GroupID: "g1", Traits: `{"name":"Acme","employees":100}`,
	})
	alias := destinationtest.Event(t, destinationtest.Call{
		Type: sdk.TypeAlias, MessageID: "m-alias", UserID: "u1", PreviousID: "a1",
	})
	w.deliverOK(track, identify, anonymous, page, screen, group, alias)

	if got, want := w.tables(), []string{"aliases", "groups", "identifies", "order_completed", "pages", "screens", "tracks", "users"}; !slices.Equal(got, want) {
		t.Errorf("tables %v, want %v", got, want)
	}
	contextCols := map[string]string{"context_ip": "text", "context_page_url": "text", "context_library_name": "text", "context_library_version": "text"}
	checkColumns(t, w, "tracks", trackColumns, contextCols)
	props := maps.Clone(contextCols)
	maps.Copy(props, map[string]string{
		"revenue": "double precision", "currency": "text", "product_sku": "text", "product_price_cents": "double precision",
		"tags": "text", "in_stock": "boolean",
	})
	checkColumns(t, w, "order_completed", trackColumns, props)
	traits := map[string]string{"first_name": "text", "email": "text", "address_city": "text", "age": "double precision"}
	checkColumns(t, w, "identifies", callColumns, traits)
	checkColumns(t, w, "users", userColumns, traits)
	pageProps := maps.Clone(contextCols)
	maps.Copy(pageProps, map[string]string{"url": "text", "title": "text"})
	checkColumns(t, w, "pages", pageColumns, pageProps)
	checkColumns(t, w, "screens", pageColumns, map[string]string{"orientation": "text"})
	checkColumns(t, w, "groups", groupColumns, map[string]string{"name": "text", "employees": "double precision"})
	checkColumns(t, w, "aliases", aliasColumns, nil)

	tr := w.one(`SELECT * FROM s.tracks`)
	want := map[string]any{
		"id": "m-track", "anonymous_id": "a1", "user_id": "u1", "event": "order_completed", "event_text": "Order Completed",
		"received_at": t1, "timestamp": t0, "sent_at": t0.Add(30 * time.Second), "original_timestamp": t0.Add(-500 * time.Millisecond),
		"context_ip": "10.0.0.1", "context_page_url": "https://example.com/pricing", "context_library_name": "analytics-go", "context_library_version": "3.3.0",
	}
	checkRow(t, "tracks", tr, want)
	maps.Copy(want, map[string]any{
		"revenue": 9.99, "currency": "EUR", "product_sku": "X-1", "product_price_cents": 999.0,
		"tags": `["a",{"b":2}]`, "in_stock": true,
	})
	checkRow(t, "order_completed", w.one(`SELECT * FROM s.order_completed`), want)

	checkRow(t, "identifies", w.one(`SELECT * FROM s.identifies WHERE id = 'm-identify'`), map[string]any{
		"id": "m-identify", "user_id": "u1", "anonymous_id": nil, "received_at": t1, "timestamp": t0, "sent_at": nil,
		"first_name": "Ada", "email": "ada@example.com", "address_city": "London", "age": 36.0,
	})
	checkRow(t, "identifies", w.one(`SELECT * FROM s.identifies WHERE id = 'm-identify-anon'`), map[string]any{
		"anonymous_id": "a2", "user_id": nil, "first_name": "Grace",
	})
	// One users row: the anonymous identify has no userId to make one of.
	checkRow(t, "users", w.one(`SELECT * FROM s.users`), map[string]any{
		"id": "u1", "received_at": t1, "first_name": "Ada", "email": "ada@example.com", "address_city": "London", "age": 36.0,
	})
	checkRow(t, "pages", w.one(`SELECT * FROM s.pages`), map[string]any{
		"id": "m-page", "anonymous_id": "a1", "name": "Pricing", "category": "Docs", "url": "https://example.com/pricing", "title": "Pricing",
		"context_ip": "10.0.0.1",
	})
	checkRow(t, "screens", w.one(`SELECT * FROM s.screens`), map[string]any{"id": "m-screen", "name": "Home", "category": nil, "orientation": "portrait"})
	checkRow(t, "groups", w.one(`SELECT * FROM s.groups`), map[string]any{"id": "m-group", "group_id": "g1", "user_id": "u1", "name": "Acme", "employees": 100.0})
	checkRow(t, "aliases", w.one(`SELECT * FROM s.aliases`), map[string]any{"id": "m-alias", "user_id": "u1", "previous_id": "a1"})
}

// checkRow compares the columns of want with a row read back; times are
// compared as instants.
func checkRow(t *testing.T, table string, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: no column %s", table, k)
			continue
		}
		if wt, isTime := v.(time.Time); isTime {
			if gt, _ := g.(time.Time); !gt.Equal(wt) {
				t.Errorf("%s.%s = %v, want %v", table, k, g, v)
			}
			continue
		}
		if g != v {
			t.Errorf("%s.%s = %#v, want %#v", table, k, g, v)
		}
	}
}

// Keys become columns by the naming rules: snake_case, flattened, 63 bytes,
// reserved names dropped; event names become tables the same way.
func TestNaming(t *testing.T) {
	w := newWarehouse(t, nil, "Naming Schema")
	long := "averyveryveryveryveryveryveryveryveryveryveryverylongPropertyNameIndeed"
	w.deliverOK(
		destinationtest.Event(t, destinationtest.Track{
			Name: "Checkout Step Viewed!", MessageID: "m1", UserID: "u1",
			Properties: `{"firstName":"Ada","HTMLParser":1,"2fa":true,"$email":"a@b.c","user-agent":"x",` +
				`"userId":"dropped","received_at":"dropped","Timestamp":"dropped","event_text":"dropped",` +
				`"context":{"ip":"1.2.3.4"},"address":{"geo":{"lat":51.5}},"` + long + `":"cut"}`,
			Context: `{"ip":"10.0.0.1","userAgentData":{"mobile":false}}`,
		}),
		destinationtest.Event(t, destinationtest.Track{Name: "Users", MessageID: "m2", UserID: "u1", Properties: `{"x":1}`}),
	)
	if got, want := w.tables(), []string{"_users", "checkout_step_viewed", "tracks"}; !slices.Equal(got, want) {
		t.Errorf("tables %v, want %v", got, want)
	}
	// context.ip of the call wins over a property that lands on context_ip.
	checkColumns(t, w, "checkout_step_viewed", trackColumns, map[string]string{
		"context_ip": "text", "context_user_agent_data_mobile": "boolean",
		"first_name": "text", "html_parser": "double precision", "_2fa": "boolean", "email": "text", "user_agent": "text",
		"address_geo_lat": "double precision", columnName(long): "text",
	})
	if got := columnName(long); len(got) != 63 || !strings.HasPrefix(got, "averyvery") {
		t.Errorf("long key became %q (%d bytes), want 63 bytes", got, len(got))
	}
	checkRow(t, "checkout_step_viewed", w.one(`SELECT * FROM s.checkout_step_viewed`), map[string]any{
		"id": "m1", "user_id": "u1", "event": "checkout_step_viewed", "event_text": "Checkout Step Viewed!",
		"context_ip": "10.0.0.1", "first_name": "Ada", "email": "a@b.c", columnName(long): "cut",
	})
	checkRow(t, "tracks", w.one(`SELECT * FROM s.tracks WHERE id = 'm2'`), map[string]any{"event": "_users", "event_text": "Users"})
}

// A key seen for the first time adds a column, typed by its first value, and
// the rows before it have it null.
func TestNewKeyAddsColumn(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m1", UserID: "u1", Properties: `{"plan":"pro"}`}))
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{
		Name: "Signed Up", MessageID: "m2", UserID: "u2", Properties: `{"plan":"free","seats":3,"trial":{"days":14}}`,
		Context: `{"locale":"en-GB"}`,
	}))
	checkColumns(t, w, "signed_up", trackColumns, map[string]string{
		"plan": "text", "seats": "double precision", "trial_days": "double precision", "context_locale": "text",
	})
	checkColumns(t, w, "tracks", trackColumns, map[string]string{"context_locale": "text"})
	rows := w.query(`SELECT id, plan, seats, trial_days FROM s.signed_up ORDER BY id`)
	if len(rows) != 2 || rows[0]["seats"] != nil || rows[1]["seats"] != 3.0 || rows[1]["trial_days"] != 14.0 {
		t.Errorf("rows %v", rows)
	}
}

// A value of another type than its column is not written into it: it is a
// row of discards, and the rest of its row is written.
func TestTypeConflicts(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Order Completed", MessageID: "m1", UserID: "u1", Properties: `{"plan":"pro","seats":3,"paid":true}`}))
	// In one batch, the first value decides: flag is boolean.
	w.deliverOK(
		destinationtest.Event(t, destinationtest.Track{Name: "Order Completed", MessageID: "m2", UserID: "u1", ReceivedAt: t2,
			Properties: `{"plan":5,"seats":"many","paid":true,"flag":true,"big":1e400}`}),
		destinationtest.Event(t, destinationtest.Track{Name: "Order Completed", MessageID: "m3", UserID: "u1", ReceivedAt: t2,
			Properties: `{"plan":"free","flag":"yes"}`}),
	)
	checkColumns(t, w, "order_completed", trackColumns, map[string]string{
		"plan": "text", "seats": "double precision", "paid": "boolean", "flag": "boolean",
	})
	checkRow(t, "order_completed", w.one(`SELECT * FROM s.order_completed WHERE id = 'm2'`), map[string]any{"plan": nil, "seats": nil, "paid": true, "flag": true})
	checkRow(t, "order_completed", w.one(`SELECT * FROM s.order_completed WHERE id = 'm3'`), map[string]any{"plan": "free", "flag": nil})
	got := w.query(`SELECT table_name, column_name, row_id, value, received_at FROM s.discards ORDER BY row_id, column_name`)
	want := []map[string]any{
		{"table_name": "order_completed", "column_name": "big", "row_id": "m2", "value": "1e400", "received_at": t2},
		{"table_name": "order_completed", "column_name": "plan", "row_id": "m2", "value": "5", "received_at": t2},
		{"table_name": "order_completed", "column_name": "seats", "row_id": "m2", "value": "many", "received_at": t2},
		{"table_name": "order_completed", "column_name": "flag", "row_id": "m3", "value": "yes", "received_at": t2},
	}
	if len(got) != len(want) {
		t.Fatalf("discards %v, want %v", got, want)
	}
	for i := range want {
		checkRow(t, "discards", got[i], want[i])
	}
	checkColumns(t, w, "discards", nil, map[string]string{
		"table_name": "text", "column_name": "text", "row_id": "text", "value": "text", "received_at": "timestamp with time zone",
	})
}

// A call delivered again, in a later batch or twice in one, makes no second
// row, nor a second discard.
func TestRedelivery(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Order Completed", MessageID: "first", UserID: "u1", Properties: `{"total":1}`}))
	var batch []sdk.Event
	for i, typ := range sdk.AllTypes() {
		batch = append(batch, destinationtest.Event(t, destinationtest.Call{
			Type: typ, Name: "Order Completed", MessageID: fmt.Sprintf("m%d", i), UserID: "u1", GroupID: "g1", PreviousID: "a1",
			Properties: `{"total":"not a number"}`, Traits: `{"plan":"pro"}`,
		}))
	}
	w.deliverOK(batch...)
	w.deliverOK(append(batch, batch...)...)
	for table, want := range map[string]int64{
		"tracks": 2, "order_completed": 2, "identifies": 1, "users": 1, "pages": 1, "screens": 1, "groups": 1, "aliases": 1, "discards": 1,
	} {
		if got := w.count(table); got != want {
			t.Errorf("%s has %d rows, want %d", table, got, want)
		}
	}
	if got := w.one(`SELECT count(DISTINCT id) AS n FROM s.tracks`)["n"]; got != int64(2) {
		t.Errorf("tracks has %v distinct ids, want 2", got)
	}
}

// users holds one row per userId, the newer traits over the older ones
// column by column, whatever order the calls come in.
func TestUsersUpsert(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	identify := func(id, user string, at time.Time, traits string) sdk.Event {
		return destinationtest.Event(t, destinationtest.Call{Type: sdk.TypeIdentify, MessageID: id, UserID: user, ReceivedAt: at, Traits: traits})
	}
	w.deliverOK(identify("m1", "u1", t1, `{"plan":"free","name":"Ada"}`))
	w.deliverOK(identify("m2", "u1", t2, `{"plan":"pro"}`))
	// Late: older than what users holds; it fills only the empty column.
	w.deliverOK(identify("m0", "u1", t0, `{"plan":"trial","company":"Acme"}`))
	checkRow(t, "users", w.one(`SELECT * FROM s.users WHERE id = 'u1'`), map[string]any{
		"plan": "pro", "name": "Ada", "company": "Acme", "received_at": t2,
	})
	// In one batch, newer first: still the newer wins.
	w.deliverOK(
		identify("n2", "u2", t2, `{"plan":"pro","seats":5}`),
		identify("n1", "u2", t1, `{"plan":"free","name":"Grace","seats":1}`),
	)
	checkRow(t, "users", w.one(`SELECT * FROM s.users WHERE id = 'u2'`), map[string]any{
		"plan": "pro", "name": "Grace", "seats": 5.0, "received_at": t2,
	})
	if got := w.count("users"); got != 2 {
		t.Errorf("users has %d rows, want 2", got)
	}
	if got := w.count("identifies"); got != 5 {
		t.Errorf("identifies has %d rows, want 5", got)
	}
}

// A row the database refuses drops its call with the database's message;
// the other calls of the batch are written.
func TestRefusedRowDropped(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	var batch []sdk.Event
	for i := range 7 {
		props := `{"note":"fine"}`
		if i == 4 {
			props = `{"note":"nul \u0000 byte"}`
		}
		batch = append(batch, destinationtest.Event(t, destinationtest.Track{Name: "Note Taken", MessageID: fmt.Sprintf("m%d", i), UserID: "u1", Properties: props}))
	}
	want := slices.Repeat([]sdk.Result{sdk.OK()}, len(batch))
	want[4] = sdk.Drop("postgres refused the call: invalid byte sequence")
	destinationtest.CheckResults(t, w.deliver(batch...), want)
	if got := w.count("note_taken"); got != 6 {
		t.Errorf("note_taken has %d rows, want 6", got)
	}
	if got := w.count("tracks"); got != 6 {
		t.Errorf("tracks has %d rows, want 6: a dropped call writes none of its rows", got)
	}
}

// A table or column dropped behind the plugin's back is made again: the
// plugin reads the schema again after a failed statement.
func TestSchemaChangedBehindTheBack(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m1", UserID: "u1", Properties: `{"plan":"pro"}`}))
	w.query(`ALTER TABLE s.tracks DROP COLUMN user_id`)
	w.query(`DROP TABLE s.signed_up`)
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m2", UserID: "u2", Properties: `{"plan":"free"}`}))
	checkRow(t, "tracks", w.one(`SELECT * FROM s.tracks WHERE id = 'm2'`), map[string]any{"user_id": "u2"})
	checkRow(t, "signed_up", w.one(`SELECT * FROM s.signed_up`), map[string]any{"id": "m2", "plan": "free"})
}

// A database that is down makes every call a retry; once it is back, the
// retried calls are written, none lost and none twice.
func TestDatabaseRestart(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	batch := func(from, n int) []sdk.Event {
		var out []sdk.Event
		for i := from; i < from+n; i++ {
			out = append(out, destinationtest.Event(t, destinationtest.Track{Name: "Order Completed", MessageID: fmt.Sprintf("m%03d", i), UserID: "u1", Properties: `{"total":1}`}))
		}
		return out
	}
	w.deliverOK(batch(0, 50)...)
	w.srv.Stop(t)
	for i, r := range w.deliver(batch(50, 50)...) {
		if r.Status != sdk.StatusRetry {
			t.Fatalf("call %d with the database down: %v (%q), want retry", i, r.Status, r.Reason)
		}
	}
	w.srv.Restart(t)
	w.connect()
	// The pool's connections died with the server: a try after the restart
	// may still fail on one, and is retried as the daemon would.
	destinationtest.CheckResults(t, deliverRetrying(t, w.plugin, batch(50, 50)), slices.Repeat([]sdk.Result{sdk.OK()}, 50))
	for _, table := range []string{"tracks", "order_completed"} {
		if got := w.count(table); got != 100 {
			t.Errorf("%s has %d rows, want 100", table, got)
		}
	}
}

// Several plugin processes (as several daemons would run), each with
// several calls at once, add the same and different columns to the same
// tables: every call is written and every column made, with no error.
func TestConcurrentSchemaChanges(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	plugins := []*host.Client{w.plugin, w.start(), w.start()}
	const callsPerBatch, batches = 20, 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for p, plugin := range plugins {
		for g := range 3 {
			wg.Go(func() {
				for b := range batches {
					var batch []sdk.Event
					for i := range callsPerBatch {
						// Shared keys race for the same column; own keys
						// add columns to the same table at the same time.
						props := fmt.Sprintf(`{"shared_%d":%d,"own_%d_%d_%d":"x"}`, b, i, p, g, b)
						batch = append(batch,
							destinationtest.Event(t, destinationtest.Track{Name: fmt.Sprintf("Event %d", b%2), MessageID: fmt.Sprintf("m-%d-%d-%d-%d", p, g, b, i), UserID: "u1", Properties: props}),
							destinationtest.Event(t, destinationtest.Call{Type: sdk.TypeIdentify, MessageID: fmt.Sprintf("i-%d-%d-%d-%d", p, g, b, i), UserID: fmt.Sprintf("u%d", i), Traits: props}),
						)
					}
					// A schema change that waits for its table's lock
					// longer than ddlLockTimeout (a slow machine's COPY
					// can hold it that long) makes a retry, which the
					// daemon would deliver again.
					for i, r := range deliverRetrying(t, plugin, batch) {
						if r.Status != sdk.StatusOK {
							mu.Lock()
							failed = append(failed, fmt.Sprintf("%s: %v %s", batch[i].MessageID, r.Status, r.Reason))
							mu.Unlock()
						}
					}
				}
			})
		}
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d calls failed, e.g. %v", len(failed), failed[:min(3, len(failed))])
	}
	const total = 3 * 3 * batches * callsPerBatch
	for table, want := range map[string]int64{"tracks": total, "event_0": total / 2, "event_1": total / 2, "identifies": total, "users": callsPerBatch} {
		if got := w.count(table); got != want {
			t.Errorf("%s has %d rows, want %d", table, got, want)
		}
	}
	cols := w.columns("identifies")
	for p := range plugins {
		for g := range 3 {
			for b := range batches {
				if name := fmt.Sprintf("own_%d_%d_%d", p, g, b); cols[name] != "text" {
					t.Errorf("identifies.%s is %q, want text", name, cols[name])
				}
			}
		}
	}
	for b := range batches {
		if name := fmt.Sprintf("shared_%d", b); cols[name] != "double precision" {
			t.Errorf("identifies.%s is %q, want double precision", name, cols[name])
		}
	}
}

// A new key whose column must wait for a long query on its table makes the
// batch a retry after ddlLockTimeout, rather than holding up the writing.
func TestSchemaChangeWaitsBriefly(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m1", UserID: "u1", Properties: `{"plan":"pro"}`}))
	report, err := w.conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := report.Exec(t.Context(), `SELECT count(*) FROM trackd.signed_up`); err != nil {
		t.Fatal(err)
	}
	newKey := destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m2", UserID: "u2", Properties: `{"plan":"free","seats":2}`})
	destinationtest.CheckResults(t, w.deliver(newKey), []sdk.Result{sdk.Retry(0, "lock timeout")})
	if err := report.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	w.deliverOK(newKey)
	checkRow(t, "signed_up", w.one(`SELECT * FROM s.signed_up WHERE id = 'm2'`), map[string]any{"seats": 2.0})
}

// A table takes at most 1,600 columns: once it refused more, the values of
// new keys go to discards, and the rows are written.
func TestTableFull(t *testing.T) {
	w := newWarehouse(t, nil, "trackd")
	var props strings.Builder
	props.WriteString(`{"plan":"pro"`)
	for i := range 1700 {
		fmt.Fprintf(&props, `,"k%04d":%d`, i, i)
	}
	props.WriteString("}")
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Wide", MessageID: "m1", UserID: "u1", Properties: props.String()}))
	w.deliverOK(destinationtest.Event(t, destinationtest.Track{Name: "Wide", MessageID: "m2", UserID: "u2", Properties: `{"k0001":1,"other":true}`}))
	checkColumns(t, w, "wide", trackColumns, nil)
	if got := w.count("wide"); got != 2 {
		t.Errorf("wide has %d rows, want 2", got)
	}
	if got := w.one(`SELECT count(*) AS n FROM s.discards WHERE table_name = 'wide'`)["n"]; got != int64(1701+2) {
		t.Errorf("discards holds %v values of wide, want %d", got, 1701+2)
	}
}

func TestConfigureErrors(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"missing dsn", nil, "dsn is empty"},
		{"bad dsn", map[string]any{"dsn": "postgres://trackd:hunter2@db:notaport/x"}, "dsn is not a PostgreSQL connection string"},
		{"empty schema", map[string]any{"dsn": "postgres://db/x", "schema": ""}, `schema ""`},
		{"long schema", map[string]any{"dsn": "postgres://db/x", "schema": strings.Repeat("s", 64)}, "schema"},
		{"bad timeout", map[string]any{"dsn": "postgres://db/x", "timeout": "soon"}, `setting "timeout"`},
		{"zero timeout", map[string]any{"dsn": "postgres://db/x", "timeout": "0s"}, "timeout 0s is too short"},
		{"unknown setting", map[string]any{"dsn": "postgres://db/x", "table": "t"}, `unknown setting "table"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls: nothing listens at the sample's dsn.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg))
}
