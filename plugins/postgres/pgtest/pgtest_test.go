package pgtest

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	query := func() int {
		t.Helper()
		conn, err := pgx.Connect(t.Context(), s.DSN)
		if err != nil {
			t.Fatalf("connect to %s: %v", s.DSN, err)
		}
		defer conn.Close(t.Context())
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT 41 + 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := query(); n != 42 {
		t.Fatalf("SELECT 41 + 1 = %d", n)
	}
	s.Stop(t)
	if _, err := pgx.Connect(t.Context(), s.DSN); err == nil {
		t.Fatal("connected to a stopped server")
	}
	s.Restart(t)
	if n := query(); n != 42 {
		t.Fatalf("after a restart, SELECT 41 + 1 = %d", n)
	}
}
