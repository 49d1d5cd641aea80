package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// group gathers the rows of calls by table. Each table's rows are sorted by
// id, so that transactions writing the same rows lock them in the same order
// and never deadlock; the users rows of one userId become one, the newer
// traits over the older ones.
func group(calls []call) map[string][]row {
	tables := map[string][]row{}
	for _, c := range calls {
		for _, r := range c.rows {
			tables[r.table] = append(tables[r.table], r)
		}
	}
	for name, rows := range tables {
		slices.SortStableFunc(rows, func(a, b row) int {
			return cmp.Or(strings.Compare(a.id, b.id), a.receivedAt.Compare(b.receivedAt))
		})
		if name == usersTable {
			tables[name] = mergeUsers(rows)
		}
	}
	return tables
}

// mergeUsers merges rows of the same id, sorted by id and then received_at,
// into one whose fields are theirs in that order: column by column, a later
// call's value wins.
func mergeUsers(rows []row) []row {
	out := rows[:0:0]
	for _, r := range rows {
		if n := len(out); n > 0 && out[n-1].id == r.id {
			fields := append(slices.Clip(out[n-1].fields), r.fields...)
			out[n-1] = row{table: r.table, id: r.id, receivedAt: r.receivedAt, fields: fields}
			continue
		}
		out = append(out, r)
	}
	return out
}

// load is what one table receives in a transaction: the columns written, in
// the order of each row's values.
type load struct {
	name  string
	t     *table
	known *knownTable // the table as the catalog knew it when the load was laid out
	cols  []column
	rows  [][]any
}

// plan lays out the tables' rows in the columns the catalog knows, tables in
// name order and discards last. A value whose column has another kind, or
// that no column can hold, is not written: it becomes a row of discards.
func (p *Postgres) plan(tables map[string][]row) []load {
	var loads []load
	var discards [][]any
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		known, _ := p.cat.table(name)
		var have map[string]kind
		if known != nil {
			have = known.cols
		}
		rows := tables[name]
		// Each name of the table's fields gets a slot; a row's fields are
		// read from its last, so that the last field of a name wins and the
		// earlier ones of that name are neither written nor discarded.
		type slot struct {
			name  string
			kind  kind // the column's, kindOther when it has none
			used  bool
			stamp int // 1 + the last row that had the name
			pos   int // in l.cols
		}
		index := map[string]int{}
		var slots []slot
		type winner struct {
			slot  int
			value any
		}
		var winners []winner // each row's fields that are written, rows one after another
		ends := make([]int, len(rows))
		for ri, r := range rows {
			for fi := len(r.fields) - 1; fi >= 0; fi-- {
				f := r.fields[fi]
				j, ok := index[f.name]
				if !ok {
					j = len(slots)
					index[f.name] = j
					kd, ok := have[f.name]
					if !ok {
						kd = kindOther
					}
					slots = append(slots, slot{name: f.name, kind: kd})
				}
				sl := &slots[j]
				if sl.stamp == ri+1 {
					continue
				}
				sl.stamp = ri + 1
				if sl.kind != kindOther && sl.kind == kindOf(f.value) {
					sl.used = true
					winners = append(winners, winner{j, f.value})
					continue
				}
				discards = append(discards, []any{name, f.name, r.id, valueText(f.value), nullTime(r.receivedAt)})
			}
			ends[ri] = len(winners)
		}
		l := load{name: name, t: tableOf(name), known: known, rows: make([][]any, len(rows))}
		var used []int
		for j := range slots {
			if slots[j].used {
				used = append(used, j)
			}
		}
		slices.SortFunc(used, func(a, b int) int { return strings.Compare(slots[a].name, slots[b].name) })
		for i, j := range used {
			slots[j].pos = i
			l.cols = append(l.cols, column{slots[j].name, slots[j].kind})
		}
		start := 0
		for ri := range rows {
			values := make([]any, len(l.cols))
			for _, w := range winners[start:ends[ri]] {
				values[slots[w.slot].pos] = w.value
			}
			l.rows[ri] = values
			start = ends[ri]
		}
		loads = append(loads, l)
	}
	if len(discards) > 0 {
		// In the order of the discards key: row_id, table_name, column_name.
		slices.SortFunc(discards, func(a, b []any) int {
			return cmp.Or(strings.Compare(a[2].(string), b[2].(string)), strings.Compare(a[0].(string), b[0].(string)), strings.Compare(a[1].(string), b[1].(string)))
		})
		// known is set once the table is sure to be there (writeOnce).
		loads = append(loads, load{name: discardsTable, t: tableOf(discardsTable), cols: discardsColumns, rows: discards})
	}
	return loads
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// copyIn writes loads in one transaction: each table's rows are copied
// (COPY) into a temporary table, then inserted from it into the table,
// leaving out an id that is there already (or updating it, for users).
// Redelivered calls therefore add no row.
func (p *Postgres) copyIn(ctx context.Context, loads []load) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	temps := p.temps.of(conn.Conn())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	next, ddl := temps.prepare(loads)
	if ddl != "" {
		if _, err := tx.Exec(ctx, ddl); err != nil {
			return err
		}
	}
	var insert strings.Builder
	for _, l := range loads {
		temp := l.known.temp
		names := make([]string, len(l.cols))
		for j, c := range l.cols {
			names[j] = c.name
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", temp}, names, pgx.CopyFromRows(l.rows)); err != nil {
			return refusal(err)
		}
		l.insert(&insert, p.cfg.Schema, temp)
	}
	if _, err := tx.Exec(ctx, insert.String()); err != nil {
		return refusal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	// A transaction that fails leaves the temporary tables as they were.
	temps.made(next)
	return nil
}

// insert writes the statement that moves l's rows from the temporary table
// temp into its table. They are read in the order they were copied in, by
// id, as the temporary table is emptied at every commit.
func (l load) insert(b *strings.Builder, schema, temp string) {
	names := columnList(l.cols, false)
	fmt.Fprintf(b, "INSERT INTO %s AS cur (%s) SELECT %s FROM pg_temp.%s ON CONFLICT (%s) ",
		pgx.Identifier{schema, l.name}.Sanitize(), names, names, temp, l.t.key)
	var set []string
	if l.t.upsert {
		// Column by column, the newer call's value wins; an older call
		// (redelivered, or late) fills only what is still empty.
		for _, c := range l.cols {
			q := pgx.Identifier{c.name}.Sanitize()
			switch c.name {
			case "id":
			case "received_at":
				set = append(set, `received_at = GREATEST(cur.received_at, EXCLUDED.received_at)`)
			default:
				set = append(set, fmt.Sprintf(`%[1]s = CASE WHEN cur.received_at > EXCLUDED.received_at THEN COALESCE(cur.%[1]s, EXCLUDED.%[1]s) ELSE COALESCE(EXCLUDED.%[1]s, cur.%[1]s) END`, q))
			}
		}
	}
	if len(set) == 0 {
		b.WriteString("DO NOTHING;\n")
		return
	}
	b.WriteString("DO UPDATE SET " + strings.Join(set, ", ") + ";\n")
}

// refusedError is the database refusing a row: a value it does not take
// (class 22, data exception), a constraint (class 23), or a limit (class 54,
// such as a key too long for its index).
type refusedError struct{ pg *pgconn.PgError }

func (e *refusedError) Error() string {
	msg := e.pg.Message
	if e.pg.Detail != "" {
		msg += " (" + e.pg.Detail + ")"
	}
	if e.pg.TableName != "" {
		msg += " in table " + e.pg.TableName
	}
	return msg + " (SQLSTATE " + e.pg.Code + ")"
}

// refusal is err as a refusedError when the database refused a row.
func refusal(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23", "54":
			return &refusedError{pgErr}
		}
	}
	return err
}
