package pluginhost

import (
	"slices"
	"sort"
	"strings"
)

// secretWords mark a setting whose value must never reach a log line or a
// dead letter, whatever the plugin writes.
var secretWords = []string{"key", "secret", "token", "password"}

// secretsReplacer masks, in any text, the string values of settings whose
// names contain a secret word, at any depth of the table, and of the settings
// the plugin declared secret: keys or dotted paths, a table's covering every
// string under it. nil when there are none.
func secretsReplacer(settings map[string]any, declared []string) *strings.Replacer {
	var secrets []string
	var walk func(t map[string]any, path string, secret bool)
	walk = func(t map[string]any, path string, secret bool) {
		for k, v := range t {
			p := k
			if path != "" {
				p = path + "." + k
			}
			s := secret || isSecretName(k) || slices.Contains(declared, p)
			switch v := v.(type) {
			case map[string]any:
				walk(v, p, s)
			case string:
				if s && len(v) >= 4 {
					secrets = append(secrets, v)
				}
			}
		}
	}
	walk(settings, "", false)
	if len(secrets) == 0 {
		return nil
	}
	// Longest first, so a secret containing another is masked whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, "xxxxx")
	}
	return strings.NewReplacer(pairs...)
}

func isSecretName(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
