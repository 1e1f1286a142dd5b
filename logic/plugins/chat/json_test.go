package chat

import (
	"encoding/json"
	"testing"
)

// TestJSONMatchesEncodingJSON: the hand-written encoders write what json.Marshal writes.
func TestJSONMatchesEncodingJSON(t *testing.T) {
	for _, m := range []Message{
		{Conv: "d:5:alice:bob", Seq: 42, ID: "d:5:alice:bob#42", From: "alice", CMID: "c-17", Text: "hi", TS: 1700000000000},
		{Conv: "g:g1", Seq: 1, ID: "g:g1#1", From: "<bob>", Text: "a \"quote\" & \\ \n\t\u2028 caf\u00e9 \xff", TS: -1},
		{},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendMessage(nil, &m); string(got) != string(want) {
			t.Errorf("appendMessage\n got %s\nwant %s", got, want)
		}
		for _, dup := range []bool{false, true} {
			r := sendReply{Conv: m.Conv, Seq: m.Seq, ID: m.ID, TS: m.TS, Dup: dup}
			want, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendSendReply(nil, &r); string(got) != string(want) {
				t.Errorf("appendSendReply\n got %s\nwant %s", got, want)
			}
		}
	}
}

// FuzzDecodeSendFast: whatever the fast path accepts, encoding/json decodes to the same
// request.
func FuzzDecodeSendFast(f *testing.F) {
	for _, s := range []string{`{"to":"bob","text":"hi","cmid":"c-1"}`, ` { "group" : "g1" , "text":"caf\u00e9"} `,
		`{"to":"bob","to":"eve","text":"x"}`, `{"TO":"bob"}`, `{"to":"b\"ob"}`, `{"to":null}`, `{}`, `{"text":"\xff"}`,
		`{"to":"bob",}`, `{"to":"bob"} x`, `{"to":1}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast sendReq
		if !decodeSendFast(data, &fast) {
			return
		}
		var slow sendReq
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json: %v", data, err)
		}
		if fast != slow {
			t.Fatalf("%q: fast %+v, encoding/json %+v", data, fast, slow)
		}
	})
}
