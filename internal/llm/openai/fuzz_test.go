package openai

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/kilnhq/kiln/internal/llm"
)

// FuzzChatStream feeds arbitrary bytes as the streamed body: the stream must never panic
// and must always end, with io.EOF only after a finish event. It drives the stream
// directly, without HTTP, so the fuzzer spends its time in the decoder.
func FuzzChatStream(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":{\"x\":[1]}}}]}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-3,\"function\":{\"arguments\":\"}\"}}]}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[],\"prompt_filter_results\":[]}\n\ndata: {\"error\":{\"code\":\"x\"}}\n\n"))
	f.Add([]byte("data: [DONE]\r\n\r\ndata: {\"choices\":null}\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\ndata: more\n\n:comment\r\r"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := newStream(context.Background(), "fuzz", io.NopCloser(bytes.NewReader(body)))
		defer s.Close()
		var last llm.Event
		for n := 0; ; n++ {
			if n > len(body)+8 { // every event needs input bytes, but for the few [DONE] adds
				t.Fatalf("%d events from %d bytes: the stream does not end", n, len(body))
			}
			ev, err := s.Next()
			if errors.Is(err, io.EOF) {
				if last.Type != llm.EventFinish {
					t.Fatalf("io.EOF after %+v, not after a finish event", last)
				}
				return
			}
			if err != nil {
				var e *llm.Error
				if !errors.As(err, &e) {
					t.Fatalf("error %v (%T) is not an *llm.Error", err, err)
				}
				return
			}
			last = ev
		}
	})
}
