package sdk

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

type webhookSettings struct {
	URL     string            `toml:"url"`
	Headers map[string]string `toml:"headers"`
	Timeout time.Duration     `toml:"timeout"`
	Retries int               `toml:"retries"`
	Tags    []string          `toml:"tags"`
	Auth    struct {
		User string `toml:"user"`
	} `toml:"auth"`
}

func TestSettingsDecode(t *testing.T) {
	defaults := webhookSettings{Timeout: 10 * time.Second, Retries: 3}
	tests := []struct {
		name    string
		table   map[string]any
		want    func(*webhookSettings)
		wantErr string
	}{
		{name: "empty keeps defaults", table: nil, want: func(*webhookSettings) {}},
		{
			name: "all kinds",
			table: map[string]any{
				"url":     "https://example.com/hook",
				"headers": map[string]any{"X-Team": "growth"},
				"timeout": "1m30s",
				"retries": int64(5),
				"tags":    []any{"a", "b"},
				"auth":    map[string]any{"user": "u"},
			},
			want: func(s *webhookSettings) {
				s.URL = "https://example.com/hook"
				s.Headers = map[string]string{"X-Team": "growth"}
				s.Timeout = 90 * time.Second
				s.Retries = 5
				s.Tags = []string{"a", "b"}
				s.Auth.User = "u"
			},
		},
		{name: "unknown key", table: map[string]any{"url": "x", "foo": 1}, wantErr: `unknown setting "foo"`},
		{name: "unknown nested key", table: map[string]any{"auth": map[string]any{"pass": "p"}}, wantErr: `unknown setting "auth.pass"`},
		{name: "wrong type", table: map[string]any{"retries": "many"}, wantErr: `setting "retries"`},
		{name: "wrong type in table", table: map[string]any{"headers": map[string]any{"X-N": int64(1)}}, wantErr: `setting "headers.X-N"`},
		{name: "bad duration", table: map[string]any{"timeout": "soon"}, wantErr: `setting "timeout": invalid duration: "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSettings(tt.table)
			if err != nil {
				t.Fatalf("NewSettings: %v", err)
			}
			got := defaults
			err = s.Decode(&got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "line ") {
					t.Errorf("Decode error %q names a line of TOML the user never wrote", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := defaults
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decode = %+v, want %+v", got, want)
			}
		})
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusOK: "ok", StatusRetry: "retry", StatusDrop: "drop", 0: "Status(0)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func TestResultConstructors(t *testing.T) {
	tests := []struct {
		got, want Result
	}{
		{OK(), Result{Status: StatusOK}},
		{Retry(time.Second, "busy"), Result{Status: StatusRetry, Reason: "busy", RetryAfter: time.Second}},
		{Retry(-time.Second, "busy"), Result{Status: StatusRetry, Reason: "busy"}},
		{Drop("bad"), Result{Status: StatusDrop, Reason: "bad"}},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %+v, want %+v", tt.got, tt.want)
		}
	}
}
