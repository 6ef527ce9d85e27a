package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/streams"
)

// wsConn is one chat WebSocket: frames {"type","id","data"} out, one reply at a time.
type wsConn struct {
	s    *Server
	c    *websocket.Conn
	path string // the connection's request path: the instance of its problems
	who  caller
	mu   sync.Mutex // serialises writes and the frame id
	id   int
	busy sync.Mutex // held while a reply runs
	stop context.CancelFunc
}

func (ws *wsConn) send(ctx context.Context, typ string, data any) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.sendLocked(ctx, typ, data)
}

// sendLocked is send with ws.mu held.
func (ws *wsConn) sendLocked(ctx context.Context, typ string, data any) error {
	ws.id++
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		ID   int    `json:"id"`
		Data any    `json:"data"`
	}{typ, ws.id, data})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return ws.c.Write(wctx, websocket.MessageText, b)
}

func (ws *wsConn) sendError(ctx context.Context, err error) {
	_ = ws.send(ctx, "error", ws.problem(ctx, err))
}

// problem is err's problem document, classified in ctx (the connection's).
func (ws *wsConn) problem(ctx context.Context, err error) api.Problem {
	return newProblem(ctx, ws.path, ws.s.classifyAt(ctx, http.MethodGet, ws.path, err))
}

// chatWebSocket serves GET /v1/chat/ws.
func (s *Server) chatWebSocket(w http.ResponseWriter, r *http.Request) {
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	// Browsers do not apply CORS to WebSockets, so the handshake's Origin is checked here
	// against http.cors.allowed_origins, as withCORS checks other requests: pages of this
	// host and of allowed origins may connect, and clients that are not browsers send none.
	if !s.cors.allowsWebSocket(r) {
		s.respondError(w, r, errs.E(errs.PermissionDenied, "Pages of the origin %q may not open this WebSocket: it is not in http.cors.allowed_origins.", r.Header.Get("Origin")))
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.cors.wsPatterns, Subprotocols: []string{"kiln.v1"}})
	if err != nil {
		return // Accept has answered the client
	}
	c.SetReadLimit(s.cfg.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ws := &wsConn{s: s, c: c, path: r.URL.Path, who: who}
	go ws.forwardNotifications(ctx)
	go func() {
		t := time.NewTicker(s.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.draining:
				_ = c.Close(websocket.StatusGoingAway, "server shutting down")
				cancel()
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Ping(pctx)
				pcancel()
				if err != nil {
					cancel()
					return
				}
			}
		}
	}()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			cancel()       // stops a running chat, and following a conversation reply (which goes on)
			ws.busy.Lock() // wait for a running reply to finish its accounting
			_ = c.CloseNow()
			ws.busy.Unlock()
			return
		}
		var frame struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &frame); err != nil {
			ws.sendError(ctx, &errs.Error{Code: errs.MalformedJSON, Message: "A frame must be a JSON object {\"type\", \"data\"}."})
			continue
		}
		switch frame.Type {
		case "cancel":
			ws.cancelRun()
		case "chat":
			call, use, err := s.decodeWSChat(ctx, who, frame.Data)
			if err != nil {
				ws.sendError(ctx, err)
				continue
			}
			if !ws.busy.TryLock() {
				ws.sendError(ctx, errs.E(errs.Conflict, "A reply is already running on this connection; send cancel or wait for its done event."))
				continue
			}
			runCtx, stopRun := s.bound(ctx, who)
			ws.mu.Lock()
			ws.stop = stopRun
			ws.mu.Unlock()
			go func() {
				typ, data := ws.run(runCtx, ctx, call, use)
				stopRun()
				// Free the connection before the last event goes out (a client may send its
				// next chat as soon as it reads it), but under the write lock, so no frame of
				// the next reply can overtake it.
				ws.mu.Lock()
				ws.busy.Unlock()
				_ = ws.sendLocked(ctx, typ, data)
				ws.mu.Unlock()
			}()
		case "conversation.message", "conversation.tool_results":
			in, err := s.decodeWSConversation(frame.Type, frame.Data)
			if err != nil {
				ws.sendError(ctx, err)
				continue
			}
			if !ws.busy.TryLock() {
				ws.sendError(ctx, errs.E(errs.Conflict, "A reply is already running on this connection; send cancel or wait for its done event."))
				continue
			}
			started, err := s.conv.Replies.Start(ctx, replyCaller(ctx, who, ws.path), in)
			if err != nil {
				ws.busy.Unlock()
				ws.sendError(ctx, err)
				continue
			}
			ws.mu.Lock()
			ws.stop = func() { // the reply may run on after this connection: cancel it where it runs
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := started.Cancel(cctx); err != nil {
					s.log.ErrorContext(ctx, "cancel a reply", "message_id", started.Message.ID, "error", err)
				}
			}
			ws.mu.Unlock()
			go func() {
				typ, data := ws.follow(ctx, started.Message)
				ws.mu.Lock()
				ws.busy.Unlock()
				if typ != "" {
					_ = ws.sendLocked(ctx, typ, data)
				}
				ws.mu.Unlock()
			}()
		default:
			ws.sendError(ctx, errs.InvalidFields("invalid frame", []errs.FieldError{{Pointer: "/type", Message: "must be chat, conversation.message, conversation.tool_results or cancel"}}))
		}
	}
}

func (ws *wsConn) cancelRun() {
	ws.mu.Lock()
	stop := ws.stop
	ws.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// run streams one reply and returns its last event, done or error, for the caller to send
// once the connection is free for the next reply. connCtx outlives a cancelled reply.
func (ws *wsConn) run(ctx, connCtx context.Context, call chat.Call, use *promptUse) (string, any) {
	start := time.Now()
	id := uuid.Must(uuid.NewV7()).String()
	res, err := ws.s.llm.Runner.Run(ctx, call, func(ev chat.Event) error {
		if ev.Kind == chat.EventStart {
			return nil
		}
		name, data := toChatEvent(ev)
		return ws.send(connCtx, name, data)
	})
	ws.s.llm.Usage.Record(chat.UsageRecord(ctx, ws.who.account(ctx), "websocket", call.Alias, start, res, err, use.usage()))
	switch {
	case err == nil:
		return "done", toChatDone(id, call.Alias, res)
	case errors.Is(err, context.Canceled) && connCtx.Err() == nil:
		if res == nil {
			res = &chat.Result{}
		}
		done := toChatDone(id, call.Alias, res)
		done.FinishReason = api.Cancelled
		return "done", done
	default:
		return "error", ws.problem(connCtx, err)
	}
}

// follow forwards a conversation reply's events as frames and returns its last one, done
// or error, for the caller to send once the connection is free. Closing the connection
// stops following, not the reply.
func (ws *wsConn) follow(ctx context.Context, reply conversations.Message) (string, any) {
	var last streams.Event
	err := ws.s.conv.Replies.Follow(ctx, ws.who.owner().Org, reply, 0, func(ev streams.Event) error {
		if ev.Final {
			last = ev
			return nil
		}
		return ws.send(ctx, ev.Type, ev.Data)
	})
	if err != nil && ctx.Err() != nil {
		return "", nil // the connection is closing: nobody reads a last frame
	}
	if err != nil {
		return "error", ws.problem(ctx, err)
	}
	return last.Type, last.Data
}

// decodeFrame validates a frame's data against the schema of its type, as the HTTP
// validator does for a request body, and decodes it into v.
func (s *Server) decodeFrame(frameType string, data json.RawMessage, v any) error {
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil || generic == nil {
		return errs.InvalidFields("invalid "+frameType+" frame", []errs.FieldError{{Pointer: "/data", Message: "must be an object"}})
	}
	var fields []errs.FieldError
	if err := s.frameSchemas[frameType].VisitJSON(generic, openapi3.MultiErrors()); err != nil {
		fields = schemaFields("/data", err)
	}
	if fields = append(fields, nulFields("/data", generic)...); len(fields) > 0 {
		return errs.InvalidFields("invalid "+frameType+" frame", fields)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &errs.Error{Code: errs.MalformedJSON, Message: "The frame's data could not be decoded."}
	}
	return nil
}

// decodeWSConversation decodes a conversation.message or conversation.tool_results frame.
func (s *Server) decodeWSConversation(frameType string, data json.RawMessage) (replies.Request, error) {
	if frameType == "conversation.tool_results" {
		var body api.WSConversationToolResults
		if err := s.decodeFrame(frameType, data, &body); err != nil {
			return replies.Request{}, err
		}
		return toReplyRequest(body.ConversationId, toolResultsInput(body.Results), body.Options)
	}
	var body api.WSConversationMessage
	if err := s.decodeFrame(frameType, data, &body); err != nil {
		return replies.Request{}, err
	}
	in, err := userInput(body.Content, body.Parts)
	if err != nil {
		return replies.Request{}, errs.UnderPointer(err, "/data")
	}
	return toReplyRequest(body.ConversationId, in, body.Options)
}

// decodeWSChat validates a chat frame's data against the ChatRequest schema, as the HTTP
// validator does for a request body, then builds the call as the HTTP handler does.
func (s *Server) decodeWSChat(ctx context.Context, who caller, data json.RawMessage) (chat.Call, *promptUse, error) {
	var body api.ChatRequest
	if err := s.decodeFrame("chat", data, &body); err != nil {
		return chat.Call{}, nil, err
	}
	return s.chatCallOf(ctx, who, &body)
}
