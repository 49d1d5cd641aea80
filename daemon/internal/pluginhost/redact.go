package pluginhost

import (
	"sort"
	"strings"
)

// secretWords mark a setting whose value must never reach a log line or a
// dead letter, whatever the plugin writes.
var secretWords = []string{"key", "secret", "token", "password"}

// secretsReplacer masks, in any text, the string values of settings whose
// names contain a secret word, at any depth of the table. nil when there are none.
func secretsReplacer(settings map[string]any) *strings.Replacer {
	var secrets []string
	var walk func(map[string]any)
	walk = func(t map[string]any) {
		for k, v := range t {
			switch v := v.(type) {
			case map[string]any:
				walk(v)
			case string:
				if isSecretName(k) && len(v) >= 4 {
					secrets = append(secrets, v)
				}
			}
		}
	}
	walk(settings)
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
