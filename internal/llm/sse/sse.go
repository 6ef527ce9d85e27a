// Package sse decodes a text/event-stream (the WHATWG server-sent events format) as
// providers send it: events of data lines, with optional event and id fields.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxEventBytes bounds one event; a longer line or event is an error, not a memory spike.
const MaxEventBytes = 4 << 20

// ErrTooLarge is returned for an event or line over MaxEventBytes.
var ErrTooLarge = errors.New("sse: event too large")

// Event is one dispatched event. Data joins the event's data lines with "\n".
type Event struct {
	Event string
	ID    string
	Data  []byte
}

// Reader reads events from an event stream.
type Reader struct {
	sc   *bufio.Scanner
	data bytes.Buffer
}

// NewReader reads events from r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 16<<10), MaxEventBytes)
	sc.Split(scanLines)
	return &Reader{sc: sc}
}

// Next returns the next event with data. At the end of input it returns io.EOF; an event
// that was not terminated by a blank line before the end is dropped (the spec says so, and
// it marks a cut stream) and io.ErrUnexpectedEOF is returned instead.
// Data is valid until the next call.
func (r *Reader) Next() (Event, error) {
	var ev Event
	r.data.Reset()
	hasData, pending := false, false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) == 0 {
			if hasData {
				ev.Data = r.data.Bytes()
				return ev, nil
			}
			ev, pending = Event{}, false
			continue
		}
		pending = true
		if line[0] == ':' {
			continue // comment (heartbeat)
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "data":
			if hasData {
				r.data.WriteByte('\n')
			}
			if r.data.Len()+len(value) > MaxEventBytes {
				return Event{}, ErrTooLarge
			}
			r.data.Write(value)
			hasData = true
		case "event":
			ev.Event = string(value)
		case "id":
			ev.ID = string(value)
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Event{}, ErrTooLarge
		}
		return Event{}, err
	}
	if pending && hasData {
		return Event{}, io.ErrUnexpectedEOF
	}
	return Event{}, io.EOF
}

// scanLines splits on \n, \r\n or a lone \r, as the event-stream format allows.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a \r at the end of the buffer: wait to see whether \n follows
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}
