// Package dev is the built-in offline provider: deterministic, instant, and labelled
// "[dev]" in every reply. It streams a reply built from the input, calls a tool when the
// request offers tools and the last user message names one, answers once tool results
// come back, returns hashing embeddings and reports usage. `make run` uses it when no
// provider is configured, and the tests use it to exercise streaming and tool calls.
package dev

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/kilnhq/kiln/internal/llm"
)

// Model is the one model the dev provider offers.
const Model = "dev-echo"

// Provider is the dev provider.
type Provider struct{ name string }

var _ llm.Provider = (*Provider)(nil)

// New returns the dev provider named cfg.Name.
func New(cfg llm.ProviderConfig) *Provider { return &Provider{name: cfg.Name} }

// Models lists dev-echo.
func (p *Provider) Models(context.Context) ([]llm.Model, error) {
	return []llm.Model{{ID: Model, OwnedBy: "kiln-dev"}}, nil
}

// Chat returns the whole reply.
func (p *Provider) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := reply(req)
	res := &llm.Response{ID: r.id, Model: Model, Message: llm.Message{Role: llm.RoleAssistant}, FinishReason: r.finish, Usage: r.usage}
	if r.text != "" {
		res.Message.Content = []llm.Part{{Type: llm.PartText, Text: r.text}}
	}
	if r.call != nil {
		res.Message.ToolCalls = []llm.ToolCall{*r.call}
	}
	return res, nil
}

// ChatStream streams the reply word by word; a tool call's arguments arrive in two pieces.
func (p *Provider) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := reply(req)
	var events []llm.Event
	for _, w := range words(r.text) {
		events = append(events, llm.Event{Type: llm.EventText, Text: w})
	}
	if c := r.call; c != nil {
		half := len(c.Arguments) / 2
		events = append(events,
			llm.Event{Type: llm.EventToolCallDelta, ToolCall: llm.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments[:half]}},
			llm.Event{Type: llm.EventToolCallDelta, ToolCall: llm.ToolCall{Arguments: c.Arguments[half:]}},
			llm.Event{Type: llm.EventToolCall, ToolCall: *c})
	}
	events = append(events, llm.Event{Type: llm.EventUsage, Usage: r.usage}, llm.Event{Type: llm.EventFinish, FinishReason: r.finish})
	return &stream{ctx: ctx, events: events}, nil
}

type stream struct {
	ctx    context.Context
	events []llm.Event
	next   int
}

func (s *stream) Next() (llm.Event, error) {
	if err := s.ctx.Err(); err != nil {
		return llm.Event{}, err
	}
	if s.next >= len(s.events) {
		return llm.Event{}, io.EOF
	}
	s.next++
	return s.events[s.next-1], nil
}

func (s *stream) Close() error { s.next = len(s.events); return nil }

// devReply is what the dev model answers.
type devReply struct {
	id     string
	text   string
	call   *llm.ToolCall
	finish llm.FinishReason
	usage  llm.Usage
}

func reply(req *llm.Request) devReply {
	r := devReply{id: "dev-" + digest(req)[:16], finish: llm.FinishStop}
	last := llm.Message{}
	if n := len(req.Messages); n > 0 {
		last = req.Messages[n-1]
	}
	lastUser := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == llm.RoleUser {
			lastUser = req.Messages[i].Text()
			break
		}
	}
	switch {
	case last.Role == llm.RoleTool:
		r.text = "[dev] " + toolSummary(req.Messages)
	case toolToCall(req, lastUser) != nil:
		t := toolToCall(req, lastUser)
		args, _ := json.Marshal(instance(t.Parameters, argumentText(lastUser, t.Name)))
		r.call = &llm.ToolCall{ID: "call_" + digest(req)[:12], Name: t.Name, Arguments: string(args)}
		r.finish = llm.FinishToolCalls
	case req.ResponseFormat != nil && req.ResponseFormat.Type != "text":
		schema := req.ResponseFormat.Schema
		if len(schema) == 0 {
			schema = json.RawMessage(`{"type":"object","properties":{"reply":{"type":"string"}},"required":["reply"]}`)
		}
		b, _ := json.Marshal(instance(schema, "[dev] "+lastUser))
		r.text = string(b)
	case lastUser == "":
		r.text = "[dev] Hello from Kiln's offline dev model."
	default:
		r.text = "[dev] You said: " + lastUser
	}
	if req.MaxTokens != nil && r.call == nil && (req.ResponseFormat == nil || req.ResponseFormat.Type == "text") && CountTokens(r.text) > *req.MaxTokens {
		// The longest prefix of whole words within the budget.
		kept := ""
		for _, w := range words(r.text) {
			if CountTokens(kept+w) > *req.MaxTokens {
				break
			}
			kept += w
		}
		r.text, r.finish = kept, llm.FinishLength
	}
	prompt := 0
	for _, m := range req.Messages {
		prompt += 4 + CountTokens(m.Text())
		for _, c := range m.ToolCalls {
			prompt += CountTokens(c.Name + c.Arguments)
		}
	}
	completion := CountTokens(r.text)
	if r.call != nil {
		completion += CountTokens(r.call.Name + r.call.Arguments)
	}
	r.usage = llm.Usage{PromptTokens: prompt, CompletionTokens: completion}
	return r
}

// toolToCall picks the tool the dev model calls: the one tool_choice forces, or the first
// offered tool whose name the last user message mentions.
func toolToCall(req *llm.Request, lastUser string) *llm.Tool {
	if len(req.Tools) == 0 || (len(req.Messages) > 0 && req.Messages[len(req.Messages)-1].Role != llm.RoleUser) {
		return nil
	}
	if tc := req.ToolChoice; tc != nil {
		switch tc.Mode {
		case llm.ToolChoiceNone:
			return nil
		case llm.ToolChoiceTool:
			for i := range req.Tools {
				if req.Tools[i].Name == tc.Name {
					return &req.Tools[i]
				}
			}
		case llm.ToolChoiceRequired:
			return &req.Tools[0]
		}
	}
	lower := strings.ToLower(lastUser)
	for i := range req.Tools {
		if strings.Contains(lower, strings.ToLower(req.Tools[i].Name)) {
			return &req.Tools[i]
		}
	}
	return nil
}

// toolSummary answers the tool results at the end of the conversation.
func toolSummary(msgs []llm.Message) string {
	names := map[string]string{}
	for _, m := range msgs {
		for _, c := range m.ToolCalls {
			names[c.ID] = c.Name
		}
	}
	var parts []string
	for i := len(msgs) - 1; i >= 0 && msgs[i].Role == llm.RoleTool; i-- {
		name := msgs[i].Name
		if name == "" {
			name = names[msgs[i].ToolCallID]
		}
		parts = append([]string{fmt.Sprintf("The tool %s returned: %s", name, msgs[i].Text())}, parts...)
	}
	return strings.Join(parts, " ")
}

// argumentText is what follows the tool's name in the message, or the whole message.
func argumentText(msg, tool string) string {
	if loc := regexp.MustCompile("(?i)" + regexp.QuoteMeta(tool)).FindStringIndex(msg); loc != nil {
		if rest := strings.TrimLeftFunc(msg[loc[1]:], func(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune(":,-", r) }); rest != "" {
			return rest
		}
	}
	return msg
}

var number = regexp.MustCompile(`-?\d+(\.\d+)?`)

// instance builds a value of JSON Schema schema from text: strings take the text, numbers
// the first number in it, booleans true; objects fill their required properties (all of
// them when none is required).
func instance(schema json.RawMessage, text string) any {
	var s struct {
		Type       any                        `json:"type"`
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
		Enum       []any                      `json:"enum"`
	}
	_ = json.Unmarshal(schema, &s)
	if len(s.Enum) > 0 {
		return s.Enum[0]
	}
	typ, _ := s.Type.(string)
	if list, ok := s.Type.([]any); ok && len(list) > 0 {
		typ, _ = list[0].(string)
	}
	if typ == "" && s.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		obj := map[string]any{}
		names := s.Required
		if len(names) == 0 {
			for n := range s.Properties {
				names = append(names, n)
			}
		}
		for _, n := range names {
			obj[n] = instance(s.Properties[n], text)
		}
		return obj
	case "array":
		return []any{}
	case "number":
		f, _ := strconv.ParseFloat(number.FindString(text), 64)
		return f
	case "integer":
		f, _ := strconv.ParseFloat(number.FindString(text), 64)
		return int64(f)
	case "boolean":
		return true
	case "null":
		return nil
	default:
		return text
	}
}

// words splits text into pieces that concatenate back to it: each word with the space
// before it.
func words(text string) []string {
	var out []string
	start := 0
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' && text[i-1] != ' ' {
			out = append(out, text[start:i])
			start = i
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

// CountTokens is the dev model's token count: one per four bytes, at least one per word.
func CountTokens(text string) int {
	return max((len(text)+3)/4, len(strings.Fields(text)))
}

func digest(req *llm.Request) string {
	h := sha256.New()
	for _, m := range req.Messages {
		fmt.Fprintf(h, "%s\x00%s\x00", m.Role, m.Text())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Dimensions is the default size of the dev embeddings.
const Dimensions = 256

// Embed returns hashing embeddings: word unigrams and bigrams (Chinese words as character
// bigrams) hashed into signed buckets, L2-normalised. Similar texts get similar vectors, offline and deterministically.
func (p *Provider) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dims := Dimensions
	if req.Dimensions != nil && *req.Dimensions > 0 {
		dims = *req.Dimensions
	}
	res := &llm.EmbedResponse{Model: Model, Vectors: make([][]float32, len(req.Input))}
	for i, text := range req.Input {
		res.Vectors[i] = Embedding(text, dims)
		res.Usage.PromptTokens += CountTokens(text)
	}
	return res, nil
}

// words4Embedding splits text into the words the hashing embedding hashes: lowercased
// runs of letters and digits, except that a run of CJK characters (written without
// spaces between words) becomes its overlapping character bigrams, so two Chinese texts
// sharing words share features.
func words4Embedding(text string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) }) {
		var run []rune
		flush := func() {
			switch {
			case len(run) == 1:
				out = append(out, string(run))
			case len(run) > 1:
				for i := 0; i+1 < len(run); i++ {
					out = append(out, string(run[i:i+2]))
				}
			}
			run = run[:0]
		}
		start := 0
		rs := []rune(f)
		for i, r := range rs {
			if cjk(r) {
				if i > start {
					out = append(out, string(rs[start:i]))
				}
				run = append(run, r)
				start = i + 1
				continue
			}
			flush()
		}
		flush()
		if start < len(rs) {
			out = append(out, string(rs[start:]))
		}
	}
	return out
}

var stopWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`a an the and or but if of to in on at by for with from as is are was were be been
		it its this that these those i me my we our you your he she they them their what which who how why when where do does
		did can could should would will shall may might must not no so than then there here about into over can't don't`) {
		stopWords[w] = true
	}
}

// stem strips a few English inflections ("resetting" and "resets" share "reset"), so
// a question and the text that answers it share features though their word forms differ.
func stem(w string) string {
	for _, suf := range []string{"ing", "ed", "es", "s"} {
		if len(w) > len(suf)+3 && strings.HasSuffix(w, suf) {
			w = strings.TrimSuffix(w, suf)
			if n := len(w); suf != "s" && n > 3 && w[n-1] == w[n-2] { // resetting → resett → reset
				w = w[:n-1]
			}
			return w
		}
	}
	return w
}

func cjk(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}

// Embedding is the hashing embedding of text with dims dimensions.
func Embedding(text string, dims int) []float32 {
	v := make([]float64, dims)
	toks := words4Embedding(text)
	add := func(feature string, weight float64) {
		h := fnv.New64a()
		_, _ = h.Write([]byte(feature))
		sum := h.Sum64()
		sign := 1.0
		if sum>>63 == 1 {
			sign = -1
		}
		v[sum%uint64(dims)] += sign * weight //nolint:gosec // dims is positive
	}
	// The words every English text has make unrelated texts alike: they count only in a
	// text of nothing else.
	if content := slices.DeleteFunc(slices.Clone(toks), func(t string) bool { return stopWords[t] }); len(content) > 0 {
		toks = content
	}
	for i, t := range toks {
		add(t, 1)
		if st := stem(t); st != t {
			add("~"+st, 0.7)
		} else if len(t) >= 4 {
			add("~"+t, 0.7)
		}
		if i > 0 {
			add(toks[i-1]+" "+t, 0.5)
		}
	}
	var norm float64
	for _, x := range v {
		norm += x * x
	}
	out := make([]float32, dims)
	if norm == 0 {
		return out
	}
	norm = math.Sqrt(norm)
	for i, x := range v {
		out[i] = float32(x / norm)
	}
	return out
}
