package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startNATS runs a nats-server with JetStream in the test process (no daemon)
// with a stream on track and track.> whose messages are at most maxMsgSize bytes.
func startNATS(t *testing.T, maxMsgSize int32) (url string, stream jetstream.Stream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err = js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "TRACK", Subjects: []string{"track", "track.>"}, MaxMsgSize: maxMsgSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), stream
}

// storedBodies returns the bodies in the stream, in order, with their subjects.
func storedBodies(t *testing.T, stream jetstream.Stream) (subjects, bodies []string) {
	t.Helper()
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		subjects = append(subjects, msg.Subject)
		bodies = append(bodies, string(msg.Data))
	}
	return subjects, bodies
}

func writeJSONL(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSendPublishesLinesAsTheyAre(t *testing.T) {
	url, stream := startNATS(t, 200)
	good := []string{
		`{"event":"Order Completed","userId":"u1","messageId":"m1","properties":{"revenue":18.90}}`,
		`  {"event":"Signed Up",   "anonymousId":"a1"}  `,
		`{"event":"Signed Up","userId":42}`, // the daemon, not send, judges the fields
		`{"event":"Last","userId":"u3"}`,
	}
	tooBig := `{"event":"Big","userId":"u4","properties":{"note":"` + strings.Repeat("x", 200) + `"}}`
	path := writeJSONL(t, good[0]+"\n"+
		"\n"+ // 2: blank, skipped silently
		"not json\n"+ // 3
		good[1]+"\n"+
		"[1,2]\n"+ // 5
		good[2]+"\r\n"+
		tooBig+"\n"+ // 7: refused by the stream
		"   \t\n"+
		good[3]) // no newline at the end

	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"send", "--nats", url, path}, &stdout, &stderr)

	if code != 1 {
		t.Errorf("exit code %d, want 1 (lines were skipped and an event failed)", code)
	}
	if want := "sent 5 events (4 accepted by JetStream, 1 failed, 2 lines skipped)\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	for _, want := range []string{
		path + `:3: not a JSON object: invalid character 'o' in literal null (expecting 'u'): "not json"`,
		path + ":5: not a JSON object: it is an array",
		path + ":7: not stored by JetStream: ",
		"trackd send: " + path + ": 2 lines skipped and 1 event not stored; see the messages above",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), ":2:") || strings.Contains(stderr.String(), ":8:") {
		t.Errorf("a blank line was reported:\n%s", stderr.String())
	}

	subjects, bodies := storedBodies(t, stream)
	if fmt.Sprintf("%q", bodies) != fmt.Sprintf("%q", good) {
		t.Errorf("stream holds\n%q\nwant the good lines byte for byte\n%q", bodies, good)
	}
	for _, s := range subjects {
		if s != "track" {
			t.Errorf("published to %q, want track", s)
		}
	}
}

// With --config, send finds a running trackd's embedded server from nats.embedded.listen.
func TestSendFindsTheServerInTheConfig(t *testing.T) {
	url, stream := startNATS(t, 0)
	cfg := writeConfig(t, fmt.Sprintf("[nats.embedded]\nlisten = %q\n", strings.TrimPrefix(url, "nats://")))
	path := writeJSONL(t, "{\"event\":\"A\",\"userId\":\"u1\"}\n{\"event\":\"B\",\"userId\":\"u1\"}\n")

	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"send", "--config", cfg, "--subject", "track.web", "--rate", "1000", path}, &stdout, &stderr)
	if code != 0 || stdout.String() != "sent 2 events (2 accepted by JetStream, 0 failed, 0 lines skipped)\n" {
		t.Errorf("code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	subjects, bodies := storedBodies(t, stream)
	if fmt.Sprint(subjects) != "[track.web track.web]" || len(bodies) != 2 {
		t.Errorf("stream holds %q on %v, want two events on track.web", bodies, subjects)
	}
}

func TestSendRefusesWithOneSentence(t *testing.T) {
	url, _ := startNATS(t, 0)
	nobody := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("[nats.embedded]\nlisten = %q\n", nobody))
	path := writeJSONL(t, "{\"event\":\"A\",\"userId\":\"u1\"}\n")
	missing := filepath.Join(t.TempDir(), "nope.jsonl")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"trackd not running", []string{"--config", cfg, path},
			fmt.Sprintf("cannot connect to NATS at nats://%s (from %s nats.embedded.listen); is trackd running?", nobody, cfg)},
		{"password hidden", []string{"--nats", "nats://me:secret@" + nobody, path},
			fmt.Sprintf("cannot connect to NATS at nats://me:xxxxx@%s (from --nats); is the NATS server running?", nobody)},
		{"no stream on the subject", []string{"--nats", url, "--subject", "events", path},
			fmt.Sprintf(`no JetStream stream stores subject "events" (--subject) on NATS at %s; is trackd running there?`, url)},
		{"missing file", []string{"--nats", url, missing},
			fmt.Sprintf("cannot open %s: no such file or directory", missing)},
		{"negative rate", []string{"--nats", url, "--rate", "-5", path},
			"--rate -5 is not a number of events per second; use 0 for no limit"},
		{"two files", []string{"--nats", url, path, path},
			"one input file at most, got 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(append([]string{"send"}, tc.args...), &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), "trackd send: "+tc.want) {
				t.Errorf("code %d, stderr %q; want 1 and %q", code, stderr.String(), tc.want)
			}
			if strings.Contains(stderr.String(), "secret") || stdout.Len() != 0 {
				t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
			}
		})
	}
}

func TestSendHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"send", "--help"}, &stdout, &stderr); code != 0 {
		t.Errorf("send --help: code %d", code)
	}
	for _, want := range []string{
		"Usage: trackd send [--config FILE | --nats URL] [--subject SUBJ] [--rate N] [FILE|-]",
		"Example:\n  trackd send events.jsonl",
		"-nats url", "-subject subject", "-rate N", "-config file",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("send --help does not show %q:\n%s", want, stderr.String())
		}
	}
	stdout.Reset()
	dispatch([]string{"--help"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "send ") {
		t.Errorf("trackd --help does not list send:\n%s", stdout.String())
	}
}
