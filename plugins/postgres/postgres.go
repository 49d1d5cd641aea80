package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"trackd.dev/trackd/sdk"
)

// Postgres writes every call into PostgreSQL in the warehouse layout of
// Segment and RudderStack (SPEC §7b).
type Postgres struct {
	cfg     settings
	pool    *pgxpool.Pool
	lockKey int64 // the advisory lock that serializes schema changes in cfg.Schema
	names   namer
	cat     catalog
	temps   temps
}

type settings struct {
	DSN     string        `toml:"dsn"`
	Schema  string        `toml:"schema"`
	Timeout time.Duration `toml:"timeout"`
}

func defaults() settings {
	return settings{Schema: "trackd", Timeout: 30 * time.Second}
}

var (
	_ sdk.Destination = (*Postgres)(nil)
	_ sdk.Typer       = (*Postgres)(nil)
	_ sdk.Closer      = (*Postgres)(nil)
)

// Types says the plugin takes every call: each has its table.
func (*Postgres) Types() []string { return sdk.AllTypes() }

// Configure checks the settings and makes the connection pool, which
// connects on first use: Configure makes no network calls.
func (p *Postgres) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if cfg.DSN == "" {
		return errors.New(`dsn is empty; set it to the database's connection string, such as "${TRACKD_PG_DSN}"`)
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's message quotes no password, but may quote the string.
		return errors.New("dsn is not a PostgreSQL connection string (postgres://user:password@host:5432/database or host=... dbname=...)")
	}
	if cfg.Schema == "" || len(cfg.Schema) > maxNameBytes {
		return fmt.Errorf("schema %q must be a name of 1 to %d bytes", cfg.Schema, maxNameBytes)
	}
	if cfg.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "30s"`, cfg.Timeout)
	}
	if _, ok := poolCfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		poolCfg.ConnConfig.RuntimeParams["application_name"] = "trackd-postgres"
	}
	poolCfg.BeforeClose = p.temps.forget
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("trackd postgres schema " + cfg.Schema))
	p.cfg, p.pool, p.lockKey = cfg, pool, int64(h.Sum64())
	return nil
}

// Close closes the connection pool.
func (p *Postgres) Close(context.Context) error {
	if p.pool != nil {
		p.pool.Close()
	}
	return nil
}

// call is a call of a batch that became rows.
type call struct {
	index int // in the batch
	rows  []row
}

// Deliver writes the batch in one transaction and answers ok once it is
// committed. When the database refuses a row, the batch is split until the
// calls it refuses are alone; they are dropped with its message, the others
// written.
func (p *Postgres) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	results := make([]sdk.Result, len(batch))
	calls := make([]call, 0, len(batch))
	for i, e := range batch {
		rows, err := p.names.rows(e)
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		calls = append(calls, call{index: i, rows: rows})
	}
	p.deliver(ctx, calls, results)
	return results
}

func (p *Postgres) deliver(ctx context.Context, calls []call, results []sdk.Result) {
	if len(calls) == 0 {
		return
	}
	err := p.write(ctx, calls)
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "42") && ctx.Err() == nil {
		// A table or column the plugin knew of is gone, or another is in
		// its way: the schema changed behind its back. It has read the
		// schema again; once more.
		err = p.write(ctx, calls)
	}
	var refused *refusedError
	switch {
	case err == nil:
		for _, c := range calls {
			results[c.index] = sdk.OK()
		}
	case errors.As(err, &refused) && len(calls) == 1:
		results[calls[0].index] = sdk.Drop("postgres refused the call: " + refused.Error())
	case errors.As(err, &refused):
		half := len(calls) / 2
		p.deliver(ctx, calls[:half], results)
		p.deliver(ctx, calls[half:], results)
	default:
		for _, c := range calls {
			results[c.index] = sdk.Retry(0, "postgres: "+err.Error())
		}
	}
}

// write writes the rows of calls in one transaction.
func (p *Postgres) write(ctx context.Context, calls []call) error {
	err := p.writeOnce(ctx, calls)
	var refused *refusedError
	if err != nil && !errors.As(err, &refused) {
		// Whatever failed, the schema the plugin knows may be wrong: it is
		// read again before the next write.
		p.cat.forget()
	}
	return err
}

func (p *Postgres) writeOnce(ctx context.Context, calls []call) error {
	if err := p.cat.loadOnce(ctx, p.pool, p.cfg.Schema); err != nil {
		return err
	}
	if err := p.ensure(ctx, needs(calls)); err != nil {
		return err
	}
	loads := p.plan(group(calls))
	if last := &loads[len(loads)-1]; last.name == discardsTable {
		if err := p.ensure(ctx, map[string][]column{discardsTable: discardsColumns}); err != nil {
			return err
		}
		last.known, _ = p.cat.table(discardsTable)
	}
	return p.copyIn(ctx, loads)
}
