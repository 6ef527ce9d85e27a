package kiln

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The event types of a job's stream (GET /v1/jobs/{id}/events).
const (
	JobEventProgress  = "job.progress"
	JobEventSucceeded = "job.succeeded"
	JobEventFailed    = "job.failed"
	JobEventCancelled = "job.cancelled"
)

// JobEvent is one event of a job's stream: job.progress (Progress set), then one final
// event, job.succeeded, job.failed or job.cancelled (End set). ID is its `id:`.
type JobEvent struct {
	ID       int
	Type     string
	Data     json.RawMessage
	Progress *JobProgressEvent
	End      *JobEndEvent
}

// followJobResumes bounds the reconnections of FollowJob that deliver no event.
const followJobResumes = 5

// FollowJob follows job id's events (GET /v1/jobs/{id}/events) to its end: fn, when not
// nil, gets every event in order, and FollowJob returns the final one (its State says how
// the job ended: a failed job is not an error). A lost connection is resumed after the
// last event received, so fn sees each event once; a refused request is a *ProblemError.
// It returns early with fn's error or the context's. params may carry Kiln-Org.
func (c *Client) FollowJob(ctx context.Context, id ID, params *StreamJobEventsParams, fn func(JobEvent) error, reqEditors ...RequestEditorFn) (*JobEndEvent, error) {
	return followJob(ctx, c, id, params, fn, reqEditors)
}

// FollowJob is Client.FollowJob through the client c wraps.
func (c *ClientWithResponses) FollowJob(ctx context.Context, id ID, params *StreamJobEventsParams, fn func(JobEvent) error, reqEditors ...RequestEditorFn) (*JobEndEvent, error) {
	return followJob(ctx, c.ClientInterface, id, params, fn, reqEditors)
}

func followJob(ctx context.Context, c ClientInterface, id ID, params *StreamJobEventsParams, fn func(JobEvent) error, reqEditors []RequestEditorFn) (*JobEndEvent, error) {
	var p StreamJobEventsParams
	if params != nil {
		p = *params
	}
	last, idle := 0, 0
	for {
		p.After, p.LastEventID = nil, nil
		if last > 0 {
			s := strconv.Itoa(last)
			p.LastEventID = &s
		}
		resp, err := c.StreamJobEvents(ctx, id, &p, append([]RequestEditorFn{acceptEventStream}, reqEditors...)...)
		if err != nil {
			return nil, err
		}
		stream, err := newChatStream(ctx, resp)
		if err != nil {
			return nil, err
		}
		before := last
		end, err, resumable := readJobEvents(stream, &last, fn)
		_ = stream.Close()
		if end != nil {
			return end, nil
		}
		if !resumable || ctx.Err() != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			return nil, err
		}
		if last == before {
			idle++
		} else {
			idle = 0
		}
		if idle >= followJobResumes {
			return nil, fmt.Errorf("kiln: follow job %s: %w", id, err)
		}
	}
}

// readJobEvents reads a job stream until its final event, which it returns; last is
// the id of the last event read. A stream that ends first returns its error, and whether
// resuming it may help (a lost connection, a server shutdown).
func readJobEvents(stream *ChatStream, last *int, fn func(JobEvent) error) (*JobEndEvent, error, bool) { //nolint:revive // the flag goes with the error
	for {
		ev, err := stream.read()
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("kiln: job stream ended before its final event: %w", io.ErrUnexpectedEOF)
			}
			return nil, err, true
		}
		if ev.Type == "shutdown" {
			return nil, ErrStreamShutdown, true
		}
		if ev.Type == ChatEventTypeError {
			return nil, stream.problem(ev.Data), false
		}
		je := JobEvent{ID: ev.ID, Type: string(ev.Type), Data: ev.Data}
		switch je.Type {
		case JobEventProgress:
			je.Progress = new(JobProgressEvent)
			err = json.Unmarshal(ev.Data, je.Progress)
		case JobEventSucceeded, JobEventFailed, JobEventCancelled:
			je.End = new(JobEndEvent)
			err = json.Unmarshal(ev.Data, je.End)
		}
		if err != nil {
			return nil, fmt.Errorf("kiln: job stream: decode %s event %d: %w", je.Type, je.ID, err), false
		}
		*last = max(*last, je.ID)
		if fn != nil {
			if err := fn(je); err != nil {
				return nil, err, false
			}
		}
		if je.End != nil {
			return je.End, nil, false
		}
	}
}
