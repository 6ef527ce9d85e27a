package mockllm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/bench/mockllm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

// chunk is an OpenAI chat.completion.chunk as a client reads it.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func setup(t *testing.T, opts mockllm.Options) (*mockllm.Server, string) {
	t.Helper()
	m := mockllm.New(opts)
	m.Now = func() time.Time { return time.Unix(1700000000, 0) }
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

func post(t *testing.T, url, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readStream(t *testing.T, body io.Reader) (chunks []chunk, done bool) {
	t.Helper()
	r := sse.NewReader(body)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return chunks, done
		}
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		if done {
			t.Fatalf("event after [DONE]: %s", ev.Data)
		}
		if string(ev.Data) == "[DONE]" {
			done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatalf("decode %s: %v", ev.Data, err)
		}
		chunks = append(chunks, c)
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		streamOpts   string
		includeUsage bool
	}{
		{"WithUsage", `,"stream_options":{"include_usage":true}`, true},
		{"WithoutUsage", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const frames = 5
			m, url := setup(t, mockllm.Options{Frames: frames, FrameInterval: time.Microsecond, APIKey: "k"})
			resp := post(t, url, "k", `{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]`+tt.streamOpts+`}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			chunks, done := readStream(t, resp.Body)
			if !done {
				t.Fatal("no [DONE]")
			}
			want := frames + 2 // role, contents, finish
			if tt.includeUsage {
				want++
			}
			if len(chunks) != want {
				t.Fatalf("%d chunks, want %d", len(chunks), want)
			}
			for _, c := range chunks {
				if c.Object != "chat.completion.chunk" || c.Model != "mock-model" || c.ID != chunks[0].ID || c.Created != 1700000000 {
					t.Fatalf("chunk header %+v", c)
				}
			}
			if r := chunks[0].Choices[0].Delta.Role; r == nil || *r != "assistant" {
				t.Fatalf("first chunk has no assistant role: %+v", chunks[0])
			}
			var text strings.Builder
			for i, c := range chunks[1 : frames+1] {
				content := c.Choices[0].Delta.Content
				if content == nil || *content != mockllm.Token(i) || c.Choices[0].FinishReason != nil {
					t.Fatalf("content chunk %d: %+v", i, c)
				}
				text.WriteString(*content)
			}
			if f := chunks[frames+1].Choices[0].FinishReason; f == nil || *f != "stop" {
				t.Fatalf("finish chunk %+v", chunks[frames+1])
			}
			if tt.includeUsage {
				last := chunks[len(chunks)-1]
				if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != frames ||
					last.Usage.TotalTokens != last.Usage.PromptTokens+frames || last.Usage.PromptTokens == 0 {
					t.Fatalf("usage chunk %+v", last)
				}
			}
			if got := m.Stats(); got != (mockllm.Stats{Requests: 1, Streams: 1, Frames: frames}) {
				t.Fatalf("stats %+v", got)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	m, url := setup(t, mockllm.Options{Frames: 3})
	resp := post(t, url, "", `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := mockllm.Token(0) + mockllm.Token(1) + mockllm.Token(2)
	if got.Object != "chat.completion" || got.Model != "mock-model" || len(got.Choices) != 1 ||
		got.Choices[0].Message.Role != "assistant" || got.Choices[0].Message.Content != want || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("reply %+v", got)
	}
	if got.Usage.CompletionTokens != 3 || got.Usage.TotalTokens != got.Usage.PromptTokens+3 {
		t.Fatalf("usage %+v", got.Usage)
	}
	if s := m.Stats(); s != (mockllm.Stats{Requests: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, key, body string
		status          int
	}{
		{"ErrUnauthorized", "wrong", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, http.StatusUnauthorized},
		{"ErrMalformedJSON", "k", `{"model":`, http.StatusBadRequest},
		{"ErrNoModel", "k", `{"messages":[{"role":"user","content":"hi"}]}`, http.StatusBadRequest},
		{"ErrNoMessages", "k", `{"model":"m","messages":[]}`, http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, url := setup(t, mockllm.Options{Frames: 1, APIKey: "k"})
			resp := post(t, url, tt.key, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			var body struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Message == "" || body.Error.Type == "" {
				t.Fatalf("error body %+v (%v)", body, err)
			}
			if s := m.Stats(); s != (mockllm.Stats{}) {
				t.Fatalf("a refused request was counted: %+v", s)
			}
		})
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	_, url := setup(t, mockllm.Options{})
	resp, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"id":"mock-model"`)) {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}
