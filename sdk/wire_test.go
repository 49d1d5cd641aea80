package sdk

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"trackd.dev/trackd/sdk/destinationpb"
)

// encodeBatch is what the plugin receives for batch.
func encodeBatch(t *testing.T, batch []Event) *destinationpb.DeliverRequest {
	t.Helper()
	data, err := codec{}.Marshal(batchRequest(batch))
	if err != nil {
		t.Fatal(err)
	}
	req := new(destinationpb.DeliverRequest)
	if err := proto.Unmarshal(data.Materialize(), req); err != nil {
		t.Fatal(err)
	}
	return req
}

func TestBatchEncoding(t *testing.T) {
	ts := time.Unix(0, 1_700_000_000_123_456_789)
	batch := []Event{
		{JSON: []byte(`{"a":1}`), MessageID: "m1", Name: "A", UserID: "u1", Timestamp: ts},
		{JSON: []byte(`{}`), AnonymousID: "a2"},
	}
	want, err := proto.Marshal(&destinationpb.DeliverRequest{
		Json:               []byte(`{"a":1}{}`),
		Text:               []byte("m1Au1a2"),
		Lengths:            []uint32{7, 2, 1, 2, 0, 2, 0, 0, 0, 2},
		TimestampsUnixNano: []int64{ts.UnixNano(), 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := codec{}.Marshal(batchRequest(batch))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Materialize(), want) {
		t.Errorf("batchRequest encodes as\n%x\nproto.Marshal of the same DeliverRequest gives\n%x", got.Materialize(), want)
	}
	if n := batchRequest(batch).blockSizes().encodedSize(); n != len(want) {
		t.Errorf("encodedSize() = %d, the encoding is %d bytes", n, len(want))
	}
	if got, err := (codec{}).Marshal(batchRequest(nil)); err != nil || got.Len() != 0 {
		t.Errorf("an empty batch encodes as %d bytes, %v; want none", got.Len(), err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	ts := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
	batch := []Event{
		{JSON: []byte(`{"event":"A"}`), MessageID: "m1", Name: "A", UserID: "u1", Timestamp: ts},
		{},
		{JSON: []byte(`{"event":"Ünïcode"}`), MessageID: "m3", Name: "Ünïcode", AnonymousID: "a3"},
	}
	got, err := decodeBatch(encodeBatch(t, batch))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, batch, func(a, b Event) bool {
		return string(a.JSON) == string(b.JSON) && a.MessageID == b.MessageID && a.Name == b.Name &&
			a.UserID == b.UserID && a.AnonymousID == b.AnonymousID && a.Timestamp.Equal(b.Timestamp)
	}) {
		t.Errorf("decodeBatch(encodeBatch(b)) = %+v\nwant %+v", got, batch)
	}
	// A plugin appending to one event's JSON must not write over the next's.
	_ = append(got[0].JSON, "XXXXXXXX"...)
	if string(got[2].JSON) != `{"event":"Ünïcode"}` {
		t.Errorf("appending to event 0's JSON changed event 2's: %s", got[2].JSON)
	}
}

func TestDecodeBatchMalformed(t *testing.T) {
	good := func() *destinationpb.DeliverRequest {
		return encodeBatch(t, []Event{{JSON: []byte(`{}`), MessageID: "m1"}, {JSON: []byte(`{"a":1}`), Name: "B"}})
	}
	tests := map[string]func(r *destinationpb.DeliverRequest){
		"lengths missing":   func(r *destinationpb.DeliverRequest) { r.Lengths = r.Lengths[:9] },
		"json too long":     func(r *destinationpb.DeliverRequest) { r.Lengths[5] = 100 },
		"json left over":    func(r *destinationpb.DeliverRequest) { r.Json = append(r.Json, '!') },
		"text too long":     func(r *destinationpb.DeliverRequest) { r.Lengths[1] = 1 << 31 },
		"text left over":    func(r *destinationpb.DeliverRequest) { r.Text = append(r.Text, '!') },
		"timestamp missing": func(r *destinationpb.DeliverRequest) { r.TimestampsUnixNano = r.TimestampsUnixNano[:1] },
	}
	for name, spoil := range tests {
		t.Run(name, func(t *testing.T) {
			r := good()
			spoil(r)
			if got, err := decodeBatch(r); err == nil {
				t.Errorf("decodeBatch = %+v, want an error", got)
			}
		})
	}
}

func TestResultsRoundTrip(t *testing.T) {
	results := []Result{OK(), Retry(1500*time.Millisecond, "later"), Drop("bad"), OK(), Retry(0, "")}
	resp, err := encodeResults(results)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Details) != 2 {
		t.Errorf("%d details, want 2: only results with a reason or a retry time carry one", len(resp.Details))
	}
	got, err := decodeResults(resp, len(results))
	if err != nil || !slices.Equal(got, results) {
		t.Errorf("decodeResults(encodeResults(r)) = %+v, %v\nwant %+v", got, err, results)
	}
	if _, err := encodeResults([]Result{OK(), {}}); err == nil || !strings.Contains(err.Error(), "result 1") {
		t.Errorf("encodeResults of a zero Result: %v, want an error naming result 1", err)
	}
	resp.Details[0].Index = uint32(len(results))
	if _, err := decodeResults(resp, len(results)); err == nil {
		t.Error("decodeResults accepted a detail past the batch")
	}
	if _, err := decodeResults(resp, len(results)+1); err == nil {
		t.Error("decodeResults accepted too few statuses")
	}
}

func TestBufferPool(t *testing.T) {
	if 1<<maxPoolExp != maxMessageSize {
		t.Fatalf("the pool's largest tier is %d bytes, maxMessageSize %d", 1<<maxPoolExp, maxMessageSize)
	}
	for _, n := range []int{0, 1, 255, 256, 257, 100_000, maxMessageSize, maxMessageSize + 1} {
		b := bufferPool.Get(n)
		if len(*b) != n || cap(*b) < n {
			t.Errorf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		bufferPool.Put(b)
		if b := bufferPool.Get(n); len(*b) != n {
			t.Errorf("Get(%d) after Put: len %d", n, len(*b))
		}
	}
}
