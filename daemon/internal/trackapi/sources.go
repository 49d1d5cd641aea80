package trackapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sort"
	"strings"
)

// Sources maps write keys to the sources that own them. Only digests of the
// keys are kept for comparison, so every comparison is of two 32-byte values:
// its time says nothing about the key's length or its prefix.
type Sources struct {
	prefix  string
	sources []source
	// Where the browser SDKs' settings send calls, from http.public_url;
	// "" when each settings request's own host and scheme say.
	apiHost, protocol string
}

type source struct {
	name    string
	subject string
	digest  [sha256.Size]byte
	// Each browser SDK's settings for this source's key.
	settings [len(browserSDKs)]settingsDoc
}

// NewSources is the table for [http.write_keys] (source name → write key);
// a call of source S is published to prefix.S. publicURL is http.public_url,
// checked by the config: the base URL browsers reach trackd at, or "".
func NewSources(prefix string, writeKeys map[string]string, publicURL string) *Sources {
	s := &Sources{prefix: prefix}
	if scheme, rest, ok := strings.Cut(publicURL, "://"); ok {
		s.apiHost, s.protocol = strings.TrimRight(rest, "/")+"/v1", scheme
	}
	for name, key := range writeKeys {
		src := source{name: name, subject: prefix + "." + name, digest: sha256.Sum256([]byte(key))}
		for i, sdk := range browserSDKs {
			src.settings[i] = newSettingsDoc(sdk, key)
		}
		s.sources = append(s.sources, src)
	}
	sort.Slice(s.sources, func(i, j int) bool { return s.sources[i].name < s.sources[j].name })
	return s
}

// lookup returns the source whose write key is key, or nil. It compares key
// with every source's, whichever matches, so that its time does not say which.
func (s *Sources) lookup(key string) *source {
	d := sha256.Sum256([]byte(key))
	var found *source
	for i := range s.sources {
		if subtle.ConstantTimeCompare(d[:], s.sources[i].digest[:]) == 1 {
			found = &s.sources[i]
		}
	}
	return found
}

// basicAuthKey returns the write key of an Authorization header: the Basic
// username, with or without the colon and (empty) password after it, as the
// SDKs send it. ok is false when there is no Basic header.
func basicAuthKey(r *http.Request) (key string, ok bool) {
	auth := r.Header.Get("Authorization")
	const scheme = "basic "
	if len(auth) < len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(auth[len(scheme):]))
	if err != nil {
		return "", true
	}
	user, _, _ := strings.Cut(string(raw), ":")
	return user, true
}
