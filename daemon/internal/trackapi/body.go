package trackapi

import (
	"compress/gzip"
	"io"
	"net/http"
	"strings"
)

// readBody reads r's body, gunzipping it when it says so, and refuses it once
// either the bytes sent or the bytes decoded pass limit: a small gzip body that
// inflates to gigabytes costs no more than limit bytes of memory.
func readBody(r *http.Request, limit int, what string) ([]byte, error) {
	sent := &io.LimitedReader{R: r.Body, N: int64(limit) + 1}
	var body io.Reader = sent
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(sent)
		if err != nil {
			if sent.N == 0 {
				return nil, badf("body is over %d KB, the limit of %s", limit>>10, what)
			}
			return nil, badf("body says Content-Encoding gzip but is not gzip: %v", err)
		}
		defer gz.Close()
		body = gz
	default:
		return nil, badf("Content-Encoding %q is not supported; send the body as it is or gzip it", enc)
	}
	b, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	if len(b) > limit || sent.N == 0 {
		return nil, badf("body is over %d KB, the limit of %s", limit>>10, what)
	}
	if err != nil {
		return nil, badf("cannot read the body: %v", err)
	}
	return b, nil
}
