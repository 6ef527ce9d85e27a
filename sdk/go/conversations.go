package kiln

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// MessageIDHeader is the response header of POST /v1/conversations/{id}/messages and
// POST …/tool-results that names the reply's message, the name of its event stream.
const MessageIDHeader = "Kiln-Message-Id"

// ReplyEvent is one event of a conversation reply's stream: the first, reply.started,
// whose data Started holds, then the events of a chat stream (ChatEvent: message.delta,
// tool_call.delta, tool_call, tool_result, usage and, last, done, whose Id is the reply's
// message id). ID is the event's `id:`, 1, 2, …, the same on every replay of the reply.
type ReplyEvent struct {
	ChatEvent
	// Started is the data of the reply.started event; nil for the others.
	Started *ReplyStartedEvent
}

// ReplyStream reads the events of a conversation reply: the answer to
// StreamConversationMessage or StreamToolResults, or those ResumeReply attaches to. Next,
// Event, Err and Collect work as ChatStream's:
//
//	stream, err := client.StreamConversationMessage(ctx, convID, nil, kiln.ConversationMessageRequest{Content: &text})
//	if err != nil { ... } // a *ProblemError when the request was refused
//	defer stream.Close()
//	for stream.Next() {
//		if ev := stream.Event(); ev.Delta != nil {
//			fmt.Print(ev.Delta.Text)
//		}
//	}
//	if err := stream.Err(); err != nil {
//		// Lost the connection (io.ErrUnexpectedEOF, ErrStreamShutdown, …): the reply goes
//		// on on the server; get the events missed, then the live ones, with
//		stream, err = client.ResumeReply(ctx, convID, stream.MessageID(), stream.LastEventID(), nil)
//	}
//
// The reply is generated apart from the connection: closing the stream, or losing it,
// does not stop the reply (CancelMessage does). A ReplyStream is not safe for concurrent
// use, except for Close.
type ReplyStream struct {
	chat      *ChatStream
	messageID MessageID
	lastID    int
	ev        ReplyEvent
}

// StreamConversationMessage sends body to POST /v1/conversations/{id}/messages with
// stream set to true and returns the stream of the reply's events; Close it when done. A
// refused request (any non-2xx answer: an unknown conversation, a reply already running,
// …) is returned as a *ProblemError. params and reqEditors are those of
// CreateConversationMessage.
func (c *Client) StreamConversationMessage(ctx context.Context, conversationID ID, params *CreateConversationMessageParams, body ConversationMessageRequest, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return streamConversationMessage(ctx, c, conversationID, params, body, reqEditors)
}

// StreamConversationMessage is Client.StreamConversationMessage through the client c wraps.
func (c *ClientWithResponses) StreamConversationMessage(ctx context.Context, conversationID ID, params *CreateConversationMessageParams, body ConversationMessageRequest, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return streamConversationMessage(ctx, c.ClientInterface, conversationID, params, body, reqEditors)
}

// StreamToolResults sends body to POST /v1/conversations/{id}/tool-results with stream
// set to true and returns the stream of the next reply's events, as
// StreamConversationMessage does. params and reqEditors are those of SubmitToolResults.
func (c *Client) StreamToolResults(ctx context.Context, conversationID ID, params *SubmitToolResultsParams, body ToolResultsRequest, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return streamToolResults(ctx, c, conversationID, params, body, reqEditors)
}

// StreamToolResults is Client.StreamToolResults through the client c wraps.
func (c *ClientWithResponses) StreamToolResults(ctx context.Context, conversationID ID, params *SubmitToolResultsParams, body ToolResultsRequest, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return streamToolResults(ctx, c.ClientInterface, conversationID, params, body, reqEditors)
}

// ResumeReply attaches to the events of the reply messageID of the conversation
// (GET /v1/conversations/{id}/messages/{message_id}/events): those after lastEventID,
// the id of the last event received (a stream's LastEventID), then the live ones until
// the reply ends; with lastEventID 0, every event from reply.started on. The events keep
// their ids, so a stream that was cut and resumed delivers each event exactly once. A
// reply whose events are no longer kept is a *ProblemError with code stream_expired
// (410). params may carry Kiln-Org; its LastEventID and After are replaced by
// lastEventID. reqEditors are those of StreamMessageEvents.
func (c *Client) ResumeReply(ctx context.Context, conversationID ID, messageID MessageID, lastEventID int, params *StreamMessageEventsParams, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return resumeReply(ctx, c, conversationID, messageID, lastEventID, params, reqEditors)
}

// ResumeReply is Client.ResumeReply through the client c wraps.
func (c *ClientWithResponses) ResumeReply(ctx context.Context, conversationID ID, messageID MessageID, lastEventID int, params *StreamMessageEventsParams, reqEditors ...RequestEditorFn) (*ReplyStream, error) {
	return resumeReply(ctx, c.ClientInterface, conversationID, messageID, lastEventID, params, reqEditors)
}

func streamConversationMessage(ctx context.Context, c ClientInterface, conversationID ID, params *CreateConversationMessageParams, body ConversationMessageRequest, reqEditors []RequestEditorFn) (*ReplyStream, error) {
	stream := true
	body.Stream = &stream
	resp, err := c.CreateConversationMessage(ctx, conversationID, params, body, append([]RequestEditorFn{acceptEventStream}, reqEditors...)...)
	if err != nil {
		return nil, err
	}
	return newReplyStream(ctx, resp, MessageID{}, 0)
}

func streamToolResults(ctx context.Context, c ClientInterface, conversationID ID, params *SubmitToolResultsParams, body ToolResultsRequest, reqEditors []RequestEditorFn) (*ReplyStream, error) {
	stream := true
	body.Stream = &stream
	resp, err := c.SubmitToolResults(ctx, conversationID, params, body, append([]RequestEditorFn{acceptEventStream}, reqEditors...)...)
	if err != nil {
		return nil, err
	}
	return newReplyStream(ctx, resp, MessageID{}, 0)
}

func resumeReply(ctx context.Context, c ClientInterface, conversationID ID, messageID MessageID, lastEventID int, params *StreamMessageEventsParams, reqEditors []RequestEditorFn) (*ReplyStream, error) {
	if lastEventID < 0 {
		return nil, fmt.Errorf("kiln: resume reply %s: negative event id %d", messageID, lastEventID)
	}
	var p StreamMessageEventsParams
	if params != nil {
		p = *params
	}
	p.After, p.LastEventID = nil, nil
	if lastEventID > 0 {
		id := strconv.Itoa(lastEventID)
		p.LastEventID = &id
	}
	resp, err := c.StreamMessageEvents(ctx, conversationID, messageID, &p, append([]RequestEditorFn{acceptEventStream}, reqEditors...)...)
	if err != nil {
		return nil, err
	}
	return newReplyStream(ctx, resp, messageID, lastEventID)
}

// newReplyStream reads the events of resp, the answer to a reply's stream request, after
// the event lastEventID, or returns its error and closes it. messageID names the reply;
// when zero it is taken from the Kiln-Message-Id header, else from reply.started.
func newReplyStream(ctx context.Context, resp *http.Response, messageID MessageID, lastEventID int) (*ReplyStream, error) {
	if h := resp.Header.Get(MessageIDHeader); messageID == (MessageID{}) && h != "" &&
		resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		if err := messageID.UnmarshalText([]byte(h)); err != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("kiln: reply stream: bad %s header %q: %w", MessageIDHeader, h, err)
		}
	}
	chat, err := newChatStream(ctx, resp)
	if err != nil {
		return nil, err
	}
	return &ReplyStream{chat: chat, messageID: messageID, lastID: lastEventID}, nil
}

// MessageID returns the id of the reply's message, which names its events for
// ResumeReply and its feedback, cancel and messages. It is zero only when the server
// named the reply neither in the Kiln-Message-Id header nor, yet, in reply.started.
func (s *ReplyStream) MessageID() MessageID { return s.messageID }

// LastEventID returns the id of the last event Next returned; before the first, the id
// the stream was resumed after (0 for a new reply). ResumeReply with it delivers exactly
// the events this stream has not.
func (s *ReplyStream) LastEventID() int { return s.lastID }

// Header returns the headers of the stream's response.
func (s *ReplyStream) Header() http.Header { return s.chat.Header() }

// Event returns the event the last successful Next read.
func (s *ReplyStream) Event() ReplyEvent { return s.ev }

// Err returns the error that ended the stream: nil after the done event (or while the
// stream runs), a *ProblemError for an `error` event (the reply failed, or the server
// stopped following it), ErrStreamShutdown, io.ErrUnexpectedEOF, the context's error or
// a read or decoding error. When the connection was lost (ErrStreamShutdown,
// io.ErrUnexpectedEOF, a read error), ResumeReply with LastEventID picks the reply up
// where the stream stopped.
func (s *ReplyStream) Err() error { return s.chat.Err() }

// Close closes the response body; the reply goes on on the server. It is safe to call
// more than once, and concurrently with Next.
func (s *ReplyStream) Close() error { return s.chat.Close() }

// Next reads the next event, which Event then returns. It returns false at the end of the
// stream, after which Err says why.
func (s *ReplyStream) Next() bool {
	s.ev = ReplyEvent{}
	if !s.chat.Next() {
		return false
	}
	ev := ReplyEvent{ChatEvent: s.chat.Event()}
	if ev.Type == ChatEventTypeReplyStarted {
		ev.Started = new(ReplyStartedEvent)
		if err := json.Unmarshal(ev.Data, ev.Started); err != nil {
			return s.chat.end(fmt.Errorf("kiln: reply stream: decode %s event %d: %w", ev.Type, ev.ID, err))
		}
		if s.messageID == (MessageID{}) {
			s.messageID = ev.Started.MessageId
		}
	}
	s.ev, s.lastID = ev, ev.ID
	return true
}

// Collect reads the rest of the stream, closes it and returns what its events add up
// to; its Done's Id is the reply's message id. The error is Err's; the result holds the
// events read before it.
func (s *ReplyStream) Collect() (*ChatStreamResult, error) {
	defer s.Close()
	r := &ChatStreamResult{}
	for s.Next() {
		r.Add(s.Event().ChatEvent)
	}
	return r, s.Err()
}
