package main

import (
	"fmt"
	"hash/fnv"
	"maps"
	"sync"

	"github.com/jackc/pgx/v5"
)

// The temporary tables that batches are copied into are kept from one
// transaction to the next on each connection (ON COMMIT DELETE ROWS), rather
// than made and dropped in each: making and dropping them cost the database
// more than the rows did. A temporary table has every column the plugin
// knows its table to have and is named after them, so it is made again when
// the table gains a column; pgx, which remembers a COPY target's column
// types by the target's name, is then never wrong about them.

// maxTempsPerConn bounds the temporary tables a connection keeps: each commit
// empties every one of them, so with many event tables written on one
// connection, the least recently used are dropped.
const maxTempsPerConn = 16

// temps holds what each connection of the pool has.
type temps struct {
	mu    sync.Mutex
	conns map[*pgx.Conn]*connTemps
}

// of returns what conn has. It is the caller's alone while it holds conn.
func (t *temps) of(conn *pgx.Conn) *connTemps {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = map[*pgx.Conn]*connTemps{}
	}
	c := t.conns[conn]
	if c == nil {
		c = &connTemps{tables: map[string]tempTable{}}
		t.conns[conn] = c
	}
	return c
}

// forget is for a connection being closed.
func (t *temps) forget(conn *pgx.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, conn)
}

// connTemps are the temporary tables of one connection, by the table they
// are for.
type connTemps struct {
	tables map[string]tempTable
	clock  uint64
}

type tempTable struct {
	name string
	used uint64 // clock of the last use
}

// prepare returns what the connection will have once the loads are written,
// and the statements that make it so ("" for none).
func (c *connTemps) prepare(loads []load) (*connTemps, string) {
	next := &connTemps{tables: maps.Clone(c.tables), clock: c.clock + 1}
	var ddl string
	for _, l := range loads {
		name := l.known.temp
		if old, ok := next.tables[l.name]; ok && old.name != name {
			ddl += fmt.Sprintf("DROP TABLE IF EXISTS pg_temp.%s;\n", old.name)
		}
		if next.tables[l.name].name != name {
			ddl += fmt.Sprintf("CREATE TEMP TABLE %s (%s) ON COMMIT DELETE ROWS;\n", name, columnList(l.known.all, true))
		}
		next.tables[l.name] = tempTable{name: name, used: next.clock}
	}
	for len(next.tables) > maxTempsPerConn {
		var oldest string
		for table, tt := range next.tables {
			if oldest == "" || tt.used < next.tables[oldest].used {
				oldest = table
			}
		}
		ddl += fmt.Sprintf("DROP TABLE IF EXISTS pg_temp.%s;\n", next.tables[oldest].name)
		delete(next.tables, oldest)
	}
	return next, ddl
}

// made records that the transaction prepared for next committed.
func (c *connTemps) made(next *connTemps) { *c = *next }

// tempName names the temporary table of a table after the table and all
// its columns' names and kinds.
func tempName(table string, all []column) string {
	h := fnv.New64a()
	h.Write([]byte(table))
	for _, c := range all {
		h.Write([]byte{0, byte(c.kind)})
		h.Write([]byte(c.name))
	}
	return fmt.Sprintf("trackd_load_%016x", h.Sum64())
}
