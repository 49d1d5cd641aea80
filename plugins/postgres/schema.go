package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ddlLockTimeout is how long a schema change waits for its table's lock.
const ddlLockTimeout = 5 * time.Second

// catalog is what the plugin knows of the tables of its schema: each one's
// columns and their kinds, as information_schema says. It is read at the
// first write and again after a failed one, and kept up to date by the
// plugin's own schema changes.
type catalog struct {
	load sync.Mutex // one reading at a time
	ddl  sync.Mutex // one schema change at a time in this process

	mu     sync.Mutex
	loaded bool
	exists bool                   // the schema exists
	tables map[string]*knownTable // an entry is replaced, never changed
	full   map[string]bool        // tables that refused another column
}

// knownTable is a table as the catalog knows it.
type knownTable struct {
	cols map[string]kind
	all  []column // the columns of a kind the plugin writes, by name
	temp string   // the name of its temporary table
}

func newKnownTable(name string, cols map[string]kind) *knownTable {
	t := &knownTable{cols: cols}
	for _, k := range slices.Sorted(maps.Keys(cols)) {
		if cols[k] != kindOther {
			t.all = append(t.all, column{k, cols[k]})
		}
	}
	t.temp = tempName(name, t.all)
	return t
}

// forget makes the next write read the schema again.
func (c *catalog) forget() {
	c.mu.Lock()
	c.loaded = false
	c.mu.Unlock()
}

// loadOnce reads the schema's tables from information_schema unless they
// are known.
func (c *catalog) loadOnce(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	c.load.Lock()
	defer c.load.Unlock()
	c.mu.Lock()
	loaded := c.loaded
	c.mu.Unlock()
	if loaded {
		return nil
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
		return err
	}
	rows, err := pool.Query(ctx, `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = $1`, schema)
	if err != nil {
		return err
	}
	read, err := scanColumns(rows)
	if err != nil {
		return err
	}
	tables := make(map[string]*knownTable, len(read))
	for name, cols := range read {
		tables[name] = newKnownTable(name, cols)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded, c.exists, c.tables, c.full = true, exists, tables, map[string]bool{}
	return nil
}

// scanColumns reads rows of (table_name, column_name, data_type).
func scanColumns(rows pgx.Rows) (map[string]map[string]kind, error) {
	tables := map[string]map[string]kind{}
	var tableName, columnName, dataType string
	_, err := pgx.ForEachRow(rows, []any{&tableName, &columnName, &dataType}, func() error {
		if tables[tableName] == nil {
			tables[tableName] = map[string]kind{}
		}
		tables[tableName][columnName] = kindOfType(dataType)
		return nil
	})
	return tables, err
}

// table returns a table as the plugin knows it (nil for a table it does not
// know), and whether the table refused another column.
func (c *catalog) table(name string) (*knownTable, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tables[name], c.full[name]
}

// missing returns the columns of want that the table lacks, none for a table
// that refused another column.
func (c *catalog) missing(table string, want []column) []column {
	have, full := c.table(table)
	if full {
		return nil
	}
	var out []column
	for _, col := range want {
		if have == nil {
			out = append(out, col)
		} else if _, ok := have.cols[col.name]; !ok {
			out = append(out, col)
		}
	}
	return out
}

// needs returns, for each table the calls write, the columns its rows need:
// its reserved columns, then a column for each other name, of the kind of
// its first value in the batch that has one.
func needs(calls []call) map[string][]column {
	need := map[string][]column{}
	seen := map[string]map[string]bool{}
	for _, c := range calls {
		for _, r := range c.rows {
			cols, ok := need[r.table]
			if !ok {
				cols = slices.Clone(tableOf(r.table).reserved)
				seen[r.table] = map[string]bool{}
				for _, col := range cols {
					seen[r.table][col.name] = true
				}
			}
			have := seen[r.table]
			for _, f := range r.fields {
				if have[f.name] {
					continue
				}
				if kd := kindOf(f.value); kd != kindNull && kd != kindOther {
					have[f.name] = true
					cols = append(cols, column{f.name, kd})
				}
			}
			need[r.table] = cols
		}
	}
	return need
}

// ensure makes the tables and columns of need that the plugin does not know
// of: one table at a time, each in a transaction holding an advisory lock,
// so that the plugin's concurrent calls and other daemons writing to the same
// schema take turns.
func (p *Postgres) ensure(ctx context.Context, need map[string][]column) error {
	pending := false
	for name, cols := range need {
		if len(p.cat.missing(name, cols)) > 0 {
			pending = true
			break
		}
	}
	if !pending {
		return nil
	}
	p.cat.ddl.Lock()
	defer p.cat.ddl.Unlock()
	for _, name := range slices.Sorted(maps.Keys(need)) {
		// Asked again now that this call has its turn: another may have
		// made them meanwhile.
		if missing := p.cat.missing(name, need[name]); len(missing) > 0 {
			if err := p.alter(ctx, name, missing); err != nil {
				return fmt.Errorf("add columns to %s.%s: %w", p.cfg.Schema, name, err)
			}
		}
	}
	return nil
}

// alter makes the schema and the table if they are not there, adds the
// columns, and reads the table's columns back.
func (p *Postgres) alter(ctx context.Context, name string, cols []column) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Held until the transaction ends, by this plugin's calls and any other
	// daemon's: CREATE ... IF NOT EXISTS and ADD COLUMN IF NOT EXISTS are not
	// safe against each other running at once.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, p.lockKey); err != nil {
		return err
	}
	// Adding a column locks the table against every other use until the
	// transaction ends, and waits for the queries on it to end first, while
	// the writes that come after it wait too: a report running for minutes
	// must not stop the writing for minutes. This batch is retried instead.
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", ddlLockTimeout.Milliseconds())); err != nil {
		return err
	}
	t := tableOf(name)
	target := pgx.Identifier{p.cfg.Schema, name}.Sanitize()
	var ddl strings.Builder
	have, _ := p.cat.table(name)
	p.cat.mu.Lock()
	exists := p.cat.exists
	p.cat.mu.Unlock()
	if !exists {
		fmt.Fprintf(&ddl, "CREATE SCHEMA IF NOT EXISTS %s;\n", pgx.Identifier{p.cfg.Schema}.Sanitize())
	}
	if have == nil {
		fmt.Fprintf(&ddl, "CREATE TABLE IF NOT EXISTS %s (%s, PRIMARY KEY (%s));\n", target, columnList(t.reserved, true), t.key)
	}
	if ddl.Len() > 0 {
		if _, err := tx.Exec(ctx, ddl.String()); err != nil {
			return err
		}
	}
	full := false
	if len(cols) > 0 {
		var alter strings.Builder
		fmt.Fprintf(&alter, "ALTER TABLE %s", target)
		for i, c := range cols {
			if i > 0 {
				alter.WriteByte(',')
			}
			fmt.Fprintf(&alter, " ADD COLUMN IF NOT EXISTS %s %s", pgx.Identifier{c.name}.Sanitize(), c.kind.sqlType())
		}
		// A savepoint, so that a table that takes no more columns still
		// has its columns read back.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		_, err = sp.Exec(ctx, alter.String())
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "54011":
			// Too many columns: the table takes no more; values of new
			// names go to discards from now on.
			full = true
			if err := sp.Rollback(ctx); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if err := sp.Commit(ctx); err != nil {
				return err
			}
		}
	}
	rows, err := tx.Query(ctx, `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, p.cfg.Schema, name)
	if err != nil {
		return err
	}
	read, err := scanColumns(rows)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	p.cat.mu.Lock()
	defer p.cat.mu.Unlock()
	p.cat.exists = true
	if p.cat.tables == nil {
		p.cat.tables = map[string]*knownTable{}
	}
	p.cat.tables[name] = newKnownTable(name, read[name])
	if full {
		if p.cat.full == nil {
			p.cat.full = map[string]bool{}
		}
		p.cat.full[name] = true
	}
	return nil
}

// columnList is "name type, name type, ..." (withTypes) or "name, name, ...",
// the names quoted.
func columnList(cols []column, withTypes bool) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c.name}.Sanitize())
		if withTypes {
			b.WriteString(" " + c.kind.sqlType())
		}
	}
	return b.String()
}
