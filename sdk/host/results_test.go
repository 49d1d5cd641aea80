package host

import (
	"testing"

	"trackd.dev/trackd/sdk/destinationpb"
)

func TestDecodeResultsRefusesBrokenAnswers(t *testing.T) {
	ok := destinationpb.Status_STATUS_OK
	tests := map[string]*destinationpb.DeliverResponse{
		"too few statuses":      {Statuses: []destinationpb.Status{ok}},
		"no status":             {Statuses: []destinationpb.Status{ok, destinationpb.Status_STATUS_UNSPECIFIED}},
		"detail past the batch": {Statuses: []destinationpb.Status{ok, ok}, Details: []*destinationpb.Detail{{Index: 2, Reason: "x"}}},
	}
	for name, resp := range tests {
		if got, err := decodeResults(resp, 2); err == nil {
			t.Errorf("%s: decodeResults = %+v, want an error", name, got)
		}
	}
}
