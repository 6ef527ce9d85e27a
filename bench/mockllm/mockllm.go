// Package mockllm is an OpenAI-compatible upstream for load tests: it answers
// POST /v1/chat/completions (a JSON reply with usage, or an SSE stream of chat.completion.chunk
// frames ending in `data: [DONE]`) and GET /v1/models, with a configurable delay before the
// first byte and a configurable number and pacing of streamed frames. It counts what it
// sends, so a load generator can check that every frame reached the client.
package mockllm

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// maxBodyBytes bounds a request body; load-test prompts are small.
const maxBodyBytes = 1 << 20

// Options shape every reply.
type Options struct {
	// Latency is waited before the first byte of every chat reply (headers included).
	Latency time.Duration
	// Frames is the number of content frames of a streamed reply, and of tokens of a
	// blocking one.
	Frames int
	// FrameInterval is waited before each content frame, the first one included: a model
	// produces tokens at a pace, so time to first token is Latency + FrameInterval.
	FrameInterval time.Duration
	// APIKey, when set, is required as `Authorization: Bearer <APIKey>` (else 401).
	APIKey string
}

// Stats are the counters of a Server since it started.
type Stats struct {
	Requests int64 // chat completion requests answered with 200, streamed or not
	Streams  int64 // of which streamed
	Frames   int64 // content frames written (role, finish and usage chunks excluded)
}

// Sub returns the counters accumulated between before and s.
func (s Stats) Sub(before Stats) Stats {
	return Stats{Requests: s.Requests - before.Requests, Streams: s.Streams - before.Streams, Frames: s.Frames - before.Frames}
}

// Server is the mock upstream; it is an http.Handler, safe for concurrent use.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	seq      atomic.Int64
	requests atomic.Int64
	streams  atomic.Int64
	frames   atomic.Int64
	// Now stamps the `created` field; tests replace it.
	Now func() time.Time
}

// New returns a Server replying with opts.
func New(opts Options) *Server {
	s := &Server{opts: opts, mux: http.NewServeMux(), Now: time.Now}
	s.mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	s.mux.HandleFunc("GET /v1/models", s.models)
	return s
}

// ServeHTTP routes to the chat completions and models endpoints; anything else is a 404 in
// OpenAI's error format.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.APIKey != "" && r.Header.Get("Authorization") != "Bearer "+s.opts.APIKey {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.")
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Unknown request URL: "+r.Method+" "+r.URL.Path)
		return
	}
	h.ServeHTTP(w, r)
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Streams: s.streams.Load(), Frames: s.frames.Load()}
}

// Token returns the text of content frame i; a blocking reply's content is Token(0) through
// Token(Frames-1) joined.
func Token(i int) string {
	return " tok" + strconv.Itoa(i)
}

// chatRequest is the part of a Chat Completions request the mock reads.
type chatRequest struct {
	Model         string            `json:"model"`
	Messages      []json.RawMessage `json:"messages"`
	Stream        bool              `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "Could not read the request body.")
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "We could not parse the JSON body of your request.")
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "you must provide a model parameter")
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "[] is too short - 'messages'")
		return
	}
	if !sleep(r, s.opts.Latency) {
		return
	}
	model, _ := json.Marshal(req.Model) // a string always encodes
	reply := reply{
		id:      "chatcmpl-mock" + strconv.FormatInt(s.seq.Add(1), 10),
		created: s.Now().Unix(),
		model:   model,
		usage:   usage{Prompt: promptTokens(req.Messages), Completion: s.opts.Frames},
	}
	if req.Stream {
		s.stream(w, r, &reply, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	s.requests.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(reply.completion(s.opts.Frames))
}

// stream writes the frames OpenAI sends: a role chunk, one chunk per token, a chunk with the
// finish reason, a usage chunk with no choices when asked for, then [DONE].
func (s *Server) stream(w http.ResponseWriter, r *http.Request, rep *reply, includeUsage bool) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	s.requests.Add(1)
	s.streams.Add(1)
	buf := make([]byte, 0, 512)
	send := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(rep.chunk(buf[:0], `{"role":"assistant","content":""}`, "", includeUsage)) {
		return
	}
	for i := range s.opts.Frames {
		if !sleep(r, s.opts.FrameInterval) {
			return
		}
		delta := `{"content":"` + Token(i) + `"}` // tokens need no JSON escaping
		if !send(rep.chunk(buf[:0], delta, "", includeUsage)) {
			return
		}
		s.frames.Add(1)
	}
	if !send(rep.chunk(buf[:0], `{}`, "stop", includeUsage)) {
		return
	}
	if includeUsage && !send(rep.usageChunk(buf[:0])) {
		return
	}
	send([]byte("data: [DONE]\n\n"))
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}`)
}

// sleep waits d, or until the client goes away (false).
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// promptTokens is a stand-in token count: about four bytes of message JSON per token.
func promptTokens(messages []json.RawMessage) int {
	n := 0
	for _, m := range messages {
		n += len(m)
	}
	return n/4 + 1
}

type usage struct {
	Prompt, Completion int
}

func (u usage) appendJSON(b []byte) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.Prompt+u.Completion), 10)
	return append(b, `,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}`...)
}

// reply holds what every frame of one reply repeats. Frames are appended by hand: the mock
// must cost the load test as little as possible.
type reply struct {
	id      string
	created int64
	model   []byte // JSON-encoded
	usage   usage
}

func (rep *reply) head(b []byte, object string) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, rep.id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, rep.created, 10)
	b = append(b, `,"model":`...)
	b = append(b, rep.model...)
	return append(b, `,"system_fingerprint":"fp_mock","choices":[`...)
}

// chunk is one `data:` frame with a single choice; finish is "" for null. With
// include_usage, OpenAI sends "usage":null on every chunk but the last.
func (rep *reply) chunk(b []byte, delta, finish string, includeUsage bool) []byte {
	b = append(b, "data: "...)
	b = rep.head(b, "chat.completion.chunk")
	b = append(b, `{"index":0,"delta":`...)
	b = append(b, delta...)
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendQuote(b, finish)
	}
	b = append(b, "}]"...)
	if includeUsage {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

func (rep *reply) usageChunk(b []byte) []byte {
	b = append(b, "data: "...)
	b = rep.head(b, "chat.completion.chunk")
	b = append(b, `],"usage":`...)
	b = rep.usage.appendJSON(b)
	return append(b, "}\n\n"...)
}

func (rep *reply) completion(frames int) []byte {
	b := rep.head(make([]byte, 0, 512+8*frames), "chat.completion")
	b = append(b, `{"index":0,"message":{"role":"assistant","content":"`...)
	for i := range frames {
		b = append(b, Token(i)...)
	}
	b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	b = rep.usage.appendJSON(b)
	return append(b, "}"...)
}

// writeError writes OpenAI's error body.
func writeError(w http.ResponseWriter, status int, typ, code, message string) {
	type apiError struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	e := apiError{Message: message, Type: typ}
	if code != "" {
		e.Code = &code
	}
	b, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	if err != nil {
		b = []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
