package backplane

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary queue message texts to decode, as anyone with
// access to the storage account could: it never panics, accepts only
// well-formed receipts and envelopes, and what it accepts survives a round
// trip through the wire format.
func FuzzDecode(f *testing.F) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, seed := range []string{
		enc(`{"s":"sess","u":"tid:oid","m":{"jsonrpc":"2.0","id":1,"method":"ping"},"f":"abcdef0123456789","i":"00ff"}`),
		enc(`{"i":"00ff","o":1}`),
		enc(`{"i":"00ff","o":255}`),
		enc(`{"s":"sess","m":1,"i":""}`),
		enc(`{"s":"","m":{},"i":"x"}`),
		enc(`{"s":"s","m":{},"i":"x","f":"../../etc"}`),
		enc(`{"s":"s","m":{},"i":"x","o":-1}`),
		enc(`[]`),
		enc(`null`),
		"not base64!",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		w, err := decode(&text)
		if err != nil {
			return
		}
		if w.ID == "" {
			t.Fatalf("accepted a message without id: %q", text)
		}
		if w.Outcome == 0 && (w.Session == "" || len(w.Message) == 0 || (w.From != "" && !validID(w.From))) {
			t.Fatalf("accepted a malformed envelope: %+v", w)
		}
		raw, err := json.Marshal(w)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", w, err)
		}
		again := base64.StdEncoding.EncodeToString(raw)
		w2, err := decode(&again)
		if err != nil {
			t.Fatalf("round trip of %+v: %v", w, err)
		}
		// Compare messages as compact JSON: re-encoding may reformat them.
		w.Message, w2.Message = compact(t, w.Message), compact(t, w2.Message)
		if !reflect.DeepEqual(w, w2) {
			t.Fatalf("round trip changed %+v into %+v", w, w2)
		}
	})
}

func compact(t *testing.T, m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		t.Fatalf("accepted message is not JSON: %q", m)
	}
	out, _ := json.Marshal(v)
	return out
}
