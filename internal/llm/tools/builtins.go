package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zone names resolve on hosts without a zoneinfo database
)

// Builtins returns the tools Kiln ships: current_time and calculator. They touch neither
// the network nor the filesystem (beyond the system's time zone database).
func Builtins() []Tool {
	return builtins(time.Now)
}

func builtins(now func() time.Time) []Tool {
	return []Tool{currentTimeTool(now), calculatorTool()}
}

func currentTimeTool(now func() time.Time) Tool {
	return Tool{
		Name:        "current_time",
		Description: "Returns the current date and time in RFC 3339 format, with the day of the week, in the given IANA time zone (default UTC).",
		Parameters: json.RawMessage(`{
			"type": "object",
			"properties": {
				"timezone": {"type": "string", "maxLength": 64, "description": "IANA time zone name, e.g. Europe/Berlin or America/New_York; default UTC"}
			},
			"additionalProperties": false
		}`),
		Handler: func(_ context.Context, args json.RawMessage) (string, error) {
			var in struct {
				Timezone string `json:"timezone"`
			}
			if err := json.Unmarshal(args, &in); err != nil {
				return "", fmt.Errorf("current_time: decode arguments: %w", err)
			}
			loc, err := loadZone(in.Timezone)
			if err != nil {
				return "", fmt.Errorf("current_time: %w", err)
			}
			t := now().In(loc)
			return fmt.Sprintf("%s (%s, %s)", t.Format(time.RFC3339), t.Weekday(), loc), nil
		},
	}
}

// loadZone resolves an IANA zone name; empty means UTC. "Local" is refused: the server's
// own zone means nothing to the user.
func loadZone(name string) (*time.Location, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return time.UTC, nil
	}
	if name == "Local" || !validZoneName(name) {
		return nil, fmt.Errorf("unknown time zone %q; use an IANA name such as Europe/Berlin, or UTC", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q; use an IANA name such as Europe/Berlin, or UTC", name)
	}
	return loc, nil
}

// validZoneName admits the characters IANA names use, keeping paths out of LoadLocation.
func validZoneName(name string) bool {
	if len(name) > 64 || strings.Contains(name, "..") || name[0] == '/' {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("/_+-", c) >= 0:
		default:
			return false
		}
	}
	return true
}
