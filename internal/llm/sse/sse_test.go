package sse_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/llm/sse"
)

func readAll(t *testing.T, in string) ([]sse.Event, error) {
	t.Helper()
	r := sse.NewReader(strings.NewReader(in))
	var out []sse.Event
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		ev.Data = append([]byte(nil), ev.Data...)
		out = append(out, ev)
	}
}

func TestReader(t *testing.T) {
	t.Parallel()
	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		in := ": heartbeat\n\nevent: message_start\nid: 7\ndata: {\"a\":1}\n\ndata: line1\ndata:line2\r\n\r\ndata: [DONE]\r\r"
		got, err := readAll(t, in)
		if err != nil {
			t.Fatal(err)
		}
		want := []sse.Event{{Event: "message_start", ID: "7", Data: []byte(`{"a":1}`)}, {Data: []byte("line1\nline2")}, {Data: []byte("[DONE]")}}
		if len(got) != len(want) {
			t.Fatalf("got %d events %q, want %d", len(got), got, len(want))
		}
		for i := range want {
			if got[i].Event != want[i].Event || got[i].ID != want[i].ID || string(got[i].Data) != string(want[i].Data) {
				t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
	t.Run("ErrUnexpectedEOF", func(t *testing.T) {
		t.Parallel()
		got, err := readAll(t, "data: {\"a\":1}\n\ndata: {\"b\":")
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 1 {
			t.Fatalf("got %q, %v; want one event and io.ErrUnexpectedEOF", got, err)
		}
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		t.Parallel()
		_, err := readAll(t, "data: "+strings.Repeat("x", sse.MaxEventBytes+1)+"\n\n")
		if !errors.Is(err, sse.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
}

func FuzzReader(f *testing.F) {
	f.Add("data: {\"a\":1}\n\n")
	f.Add("event: x\r\ndata: a\r\ndata: b\r\n\r\n: c\n\ndata")
	f.Add("\r\r\n\n:\ndata:\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		r := sse.NewReader(strings.NewReader(in))
		for range len(in) + 1 {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > len(in) {
				t.Fatalf("data longer than input")
			}
		}
		t.Fatalf("more events than input bytes")
	})
}
