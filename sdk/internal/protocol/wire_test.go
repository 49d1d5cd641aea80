package protocol

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"trackd.dev/trackd/sdk/destinationpb"
)

// batchOf is a Batch of fixed fields.
func batchOf(events []Fields) Batch {
	return Batch{Len: len(events), At: func(i int, f *Fields) { *f = events[i] }}
}

// encode is what the plugin receives for events.
func encode(t *testing.T, events []Fields) *destinationpb.DeliverRequest {
	t.Helper()
	data, err := Codec{}.Marshal(batchOf(events))
	if err != nil {
		t.Fatal(err)
	}
	req := new(destinationpb.DeliverRequest)
	if err := proto.Unmarshal(data.Materialize(), req); err != nil {
		t.Fatal(err)
	}
	return req
}

func decode(req *destinationpb.DeliverRequest) ([]Fields, error) {
	out := make([]Fields, BatchLen(req))
	err := DecodeBatch(req, func(i int, f *Fields) { out[i] = *f })
	return out, err
}

func TestBatchEncoding(t *testing.T) {
	events := []Fields{
		{JSON: []byte(`{"a":1}`), Text: [NumText]string{"m1", "track", "A", "u1"}, UnixNano: 1_700_000_000_123_456_789},
		{JSON: []byte(`{}`), Text: [NumText]string{4: "a2", 5: "g"}},
	}
	want, err := proto.Marshal(&destinationpb.DeliverRequest{
		Json:               []byte(`{"a":1}{}`),
		Text:               []byte("m1trackAu1a2g"),
		Lengths:            []uint32{7, 2, 5, 1, 2, 0, 0, 0, 2, 0, 0, 0, 0, 2, 1, 0},
		TimestampsUnixNano: []int64{1_700_000_000_123_456_789, 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Codec{}.Marshal(batchOf(events))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Materialize(), want) {
		t.Errorf("Batch encodes as\n%x\nproto.Marshal of the same DeliverRequest gives\n%x", got.Materialize(), want)
	}
	if n := batchOf(events).blockSizes().encodedSize(); n != len(want) {
		t.Errorf("encodedSize() = %d, the encoding is %d bytes", n, len(want))
	}
	if got, err := (Codec{}).Marshal(batchOf(nil)); err != nil || got.Len() != 0 {
		t.Errorf("an empty batch encodes as %d bytes, %v; want none", got.Len(), err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	events := []Fields{
		{JSON: []byte(`{"event":"A"}`), Text: [NumText]string{"m1", "track", "A", "u1"}, UnixNano: 42},
		{},
		{JSON: []byte(`{"event":"Ünïcode"}`), Text: [NumText]string{"m3", "alias", "", "u3", "a3", "", "p3"}},
	}
	got, err := decode(encode(t, events))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, events, func(a, b Fields) bool {
		return string(a.JSON) == string(b.JSON) && a.Text == b.Text && a.UnixNano == b.UnixNano
	}) {
		t.Errorf("decode(encode(b)) = %+v\nwant %+v", got, events)
	}
	// A plugin appending to one event's JSON must not write over the next's.
	_ = append(got[0].JSON, "XXXXXXXX"...)
	if string(got[2].JSON) != `{"event":"Ünïcode"}` {
		t.Errorf("appending to event 0's JSON changed event 2's: %s", got[2].JSON)
	}
}

func TestDecodeBatchMalformed(t *testing.T) {
	good := func() *destinationpb.DeliverRequest {
		return encode(t, []Fields{{JSON: []byte(`{}`), Text: [NumText]string{"m1"}}, {JSON: []byte(`{"a":1}`), Text: [NumText]string{2: "B"}}})
	}
	tests := map[string]func(r *destinationpb.DeliverRequest){
		"lengths missing":   func(r *destinationpb.DeliverRequest) { r.Lengths = r.Lengths[:15] },
		"json too long":     func(r *destinationpb.DeliverRequest) { r.Lengths[8] = 100 },
		"json left over":    func(r *destinationpb.DeliverRequest) { r.Json = append(r.Json, '!') },
		"text too long":     func(r *destinationpb.DeliverRequest) { r.Lengths[1] = 1 << 31 },
		"text left over":    func(r *destinationpb.DeliverRequest) { r.Text = append(r.Text, '!') },
		"timestamp missing": func(r *destinationpb.DeliverRequest) { r.TimestampsUnixNano = r.TimestampsUnixNano[:1] },
	}
	for name, spoil := range tests {
		t.Run(name, func(t *testing.T) {
			r := good()
			spoil(r)
			if got, err := decode(r); err == nil {
				t.Errorf("DecodeBatch = %+v, want an error", got)
			}
		})
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
