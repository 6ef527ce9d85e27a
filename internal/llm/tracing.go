package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

type conversationKey struct{}

// WithConversation tells the gateway which conversation a call belongs to, for its span's
// gen_ai.conversation.id.
func WithConversation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, conversationKey{}, id)
}

// startSpan starts the client span of one attempt at a provider, with the OpenTelemetry
// GenAI attributes known before the answer; it returns ctx and a nil span when tracing is
// off. Prompt text is recorded only with RecordContent.
func (g *Gateway) startSpan(ctx context.Context, op attribute.KeyValue, st *targetState, input any) (context.Context, trace.Span) {
	if g.tracer == nil {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{op, semconv.GenAIProviderNameKey.String(st.Provider), semconv.GenAIRequestModel(st.Model)}
	if id, ok := ctx.Value(conversationKey{}).(string); ok && id != "" {
		attrs = append(attrs, semconv.GenAIConversationID(id))
	}
	if g.cfg.RecordContent && input != nil {
		if raw, err := json.Marshal(input); err == nil {
			attrs = append(attrs, semconv.GenAIInputMessagesKey.String(string(raw)))
		}
	}
	return g.tracer.Start(ctx, op.Value.AsString()+" "+st.Model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endSpan records what the attempt returned and ends span (nil: tracing off).
func (g *Gateway) endSpan(span trace.Span, model string, usage Usage, finish FinishReason, output string, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		kind := "error"
		if ue, ok := errors.AsType[*Error](err); ok {
			kind = string(ue.Kind)
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(kind))
		span.End()
		return
	}
	attrs := []attribute.KeyValue{semconv.GenAIUsageInputTokens(usage.PromptTokens), semconv.GenAIUsageOutputTokens(usage.CompletionTokens)}
	if model != "" {
		attrs = append(attrs, semconv.GenAIResponseModel(model))
	}
	if finish != "" {
		attrs = append(attrs, semconv.GenAIResponseFinishReasons(string(finish)))
	}
	if g.cfg.RecordContent && output != "" {
		attrs = append(attrs, semconv.GenAIOutputMessagesKey.String(output))
	}
	span.SetAttributes(attrs...)
	span.End()
}

// tracedStream ends its attempt's span when the stream ends: at its last event, an error,
// or Close, with the usage and finish reason it saw.
type tracedStream struct {
	Stream
	g      *Gateway
	span   trace.Span
	model  string
	usage  Usage
	finish FinishReason
	text   strings.Builder // the reply's text, kept only with RecordContent
	ended  bool
}

func (s *tracedStream) Next() (Event, error) {
	ev, err := s.Stream.Next()
	switch {
	case errors.Is(err, io.EOF):
		s.end(nil)
	case err != nil:
		s.end(err)
	case ev.Type == EventUsage:
		s.usage = ev.Usage
	case ev.Type == EventFinish:
		s.finish = ev.FinishReason
	case ev.Type == EventText && s.g.cfg.RecordContent:
		s.text.WriteString(ev.Text)
	}
	return ev, err
}

func (s *tracedStream) Close() error {
	s.end(nil) // a stream closed early ends its span with what it saw
	return s.Stream.Close()
}

func (s *tracedStream) end(err error) {
	if s.ended {
		return
	}
	s.ended = true
	s.g.endSpan(s.span, s.model, s.usage, s.finish, s.text.String(), err)
}
