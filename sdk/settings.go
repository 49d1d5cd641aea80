package sdk

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// Settings is a destination's [destinations.<id>.settings] table, carried
// from the daemon to the plugin as TOML.
type Settings struct {
	toml []byte
}

// NewSettings makes the Settings that Configure receives for a table as
// decoded from the daemon's config file, for unit tests of a Configure. A nil
// table is an empty one.
func NewSettings(table map[string]any) (Settings, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(table); err != nil {
		return Settings{}, fmt.Errorf("encode settings: %w", err)
	}
	return Settings{toml: buf.Bytes()}, nil
}

// Decode decodes the settings into v, a pointer to a struct with `toml:"..."`
// tags; fields it already holds are defaults that the settings override.
//
// Decoding is strict: a key that v has no field for is an error
// (`unknown setting "foo"`), and so is a value of the wrong type, naming its
// key. A time.Duration field takes a string such as "5s".
func (s Settings) Decode(v any) error {
	md, err := toml.NewDecoder(bytes.NewReader(s.toml)).Decode(v)
	if err != nil {
		return settingError(err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		return fmt.Errorf("unknown setting %q", keys[0].String())
	}
	return nil
}

// The toml package's messages name a line of the TOML the daemon encoded,
// which the user never saw; keep the key and what went wrong.
var (
	lastKeyRE   = regexp.MustCompile(`^toml: (?:line \d+ )?\(last key "(.*?)"\): (.*)$`)
	typeErrorRE = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
)

func settingError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.LastKey != "" {
		return fmt.Errorf("setting %q: %s", pe.LastKey, pe.Message)
	}
	m := lastKeyRE.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("settings: %s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	msg := m[2]
	if t := typeErrorRE.FindStringSubmatch(msg); t != nil {
		msg = fmt.Sprintf("got %s, want %s", t[1], t[2])
	}
	return fmt.Errorf("setting %q: %s", m[1], msg)
}
