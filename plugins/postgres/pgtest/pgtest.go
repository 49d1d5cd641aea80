// Package pgtest runs a throwaway PostgreSQL server for the tests of the
// postgres destination and of the daemon: initdb and pg_ctl in a temporary
// directory, on a free port of 127.0.0.1, stopped and removed when the test
// ends. When no server can be had the test is skipped, or fails when the
// environment variable CI is set, since CI installs one.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binGlob is where Debian's postgresql packages put the server binaries,
// which are not on PATH.
const binGlob = "/usr/lib/postgresql/*/bin"

// Server is a PostgreSQL server a test started.
type Server struct {
	// DSN connects to the database "postgres" as the superuser "postgres",
	// over TCP.
	DSN string

	bin  string // the directory of initdb and pg_ctl
	dir  string // the temporary directory: data, socket and log
	port int
	cred *syscall.Credential // set when the server runs as the postgres OS user
}

// Start initializes a database cluster and starts its server. The server is
// stopped, and its files removed, when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := findBin()
	if err != nil {
		unavailable(tb, err.Error())
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		// initdb and the server refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(tb, "running as root and there is no postgres user to run the server as: "+err.Error())
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base := os.TempDir()
	if st, err := os.Stat(base); s.cred != nil && (err != nil || st.Mode().Perm()&0o001 == 0) {
		base = "/tmp" // the postgres user must be able to reach the directory
	}
	s.dir, err = os.MkdirTemp(base, "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(s.dir) })
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		unavailable(tb, fmt.Sprintf("initdb failed: %v\n%s", err, out))
	}
	// A port found free may be taken before the server binds it: each try
	// is on a port found free again.
	if err := s.startRetrying(tb, func() { s.port = freePort(tb) }); err != nil {
		unavailable(tb, err.Error())
	}
	tb.Cleanup(func() { _, _ = s.run("pg_ctl", "stop", "-D", s.data(), "-m", "immediate", "-w") })
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return s
}

// Stop stops the server, as an administrator would (fast shutdown: sessions
// are ended, transactions under way rolled back).
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if out, err := s.run("pg_ctl", "stop", "-D", s.data(), "-m", "fast", "-w"); err != nil {
		tb.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Restart starts a stopped server again, on the same port.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	// While the server was down its port was free, and another process (a
	// test's listener or connection) may hold it for a moment: try again on
	// the same port, which clients such as the plugin under test connect to.
	if err := s.startRetrying(tb, nil); err != nil {
		tb.Fatal(err)
	}
}

// Log returns what the server has logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b)
}

// CPU returns the processor time the server has used so far: its postmaster's,
// and that of every process the postmaster started, running or ended. Only
// on Linux (it reads /proc).
func (s *Server) CPU() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(s.data(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %v", err)
	}
	return TreeCPU(pid)
}

// TreeCPU returns the processor time of process pid, of its children that
// ended and were waited for, and of its running children. Only on Linux.
func TreeCPU(pid int) (time.Duration, error) {
	own, ended, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	total := own + ended
	for _, child := range Children(pid) {
		if c, _, err := procCPU(child); err == nil {
			total += c
		}
	}
	return total, nil
}

// Children returns the processes whose parent is pid. Only on Linux.
func Children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		fields := statFields(st)
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			if n, err := strconv.Atoi(filepath.Base(filepath.Dir(st))); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// clockTicks is the unit of the times in /proc/<pid>/stat (USER_HZ), 100 on
// every Linux that Go runs on.
const clockTicks = 100

// procCPU returns a process's user and system time, and that of its
// children it waited for.
func procCPU(pid int) (own, children time.Duration, err error) {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("no process %d", pid)
	}
	// After the name: state, ppid, ... utime is field 14 of the line, the
	// 12th after the name.
	ticks := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * time.Second / clockTicks
	}
	return ticks(11) + ticks(12), ticks(13) + ticks(14), nil
}

// statFields returns the fields of a /proc/<pid>/stat file after the
// process's name (which may hold spaces): state first, then the parent.
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// startAttempts is how many times startRetrying tries to start the server,
// and startPause the wait after a failed try, long enough for a process that
// took the port for a moment to let it go.
const (
	startAttempts = 5
	startPause    = time.Second
)

// startRetrying starts the server, trying again after a pause when it fails
// (a port is taken before the server binds it); before each try, choosePort,
// when not nil, sets s.port. It returns the last try's error.
func (s *Server) startRetrying(tb testing.TB, choosePort func()) error {
	tb.Helper()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if choosePort != nil {
			choosePort()
		}
		if err = s.start(); err == nil {
			return nil
		}
		if attempt < startAttempts {
			// The last error quotes the server's log, which has every try's.
			tb.Logf("PostgreSQL did not start on port %d (try %d of %d); trying again", s.port, attempt, startAttempts)
			time.Sleep(startPause)
		}
	}
	return err
}

func (s *Server) start() error {
	opts := strings.Join([]string{
		"-c listen_addresses=127.0.0.1",
		"-c port=" + strconv.Itoa(s.port),
		"-c unix_socket_directories=" + s.dir,
		"-c max_connections=200",
	}, " ")
	out, err := s.run("pg_ctl", "start", "-D", s.data(), "-w", "-t", "60", "-l", filepath.Join(s.dir, "server.log"), "-o", opts)
	if err != nil {
		return fmt.Errorf("pg_ctl start on port %d: %v\n%s\n%s", s.port, err, out, s.Log())
	}
	return nil
}

// run runs one of the server's programs, as the postgres OS user when this
// process is root.
func (s *Server) run(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl start leaves the server running with our pipes as its output
	// unless -l is given, which every start does, so CombinedOutput returns.
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("%s did not finish within 2 minutes", name)
	}
	return string(out), err
}

// findBin returns the directory holding initdb and pg_ctl: the newest of
// Debian's, else the one on PATH.
func findBin() (string, error) {
	dirs, _ := filepath.Glob(binGlob)
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, pg_ctl) in %s or on PATH; install Debian's postgresql package", binGlob)
}

// version is the major version in a path such as /usr/lib/postgresql/15/bin.
func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// unavailable skips the test, or fails it under CI, which must run it.
func unavailable(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("no PostgreSQL server for the test, and CI is set: %s", why)
	}
	tb.Skipf("no PostgreSQL server for the test: %s", why)
}
