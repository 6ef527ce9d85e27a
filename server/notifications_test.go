package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
)

func init() {
	// The notification events, on the notification stream and the WebSocket.
	eventSchemas["notification.created"] = "Notification"
	eventSchemas["notification.unread_count"] = "UnreadCount"
}

// notifyUser sends a notification to the user behind access, as a domain would.
func (b *bundle) notifyUser(t testing.TB, user uuid.UUID, title string) api.Notification {
	t.Helper()
	sent, err := b.srv.notify.Send(context.Background(), notify.Note{UserID: user, Category: notify.CategoryJobs, Title: title, Link: "https://app.example/jobs"})
	if err != nil || sent.Notification == nil {
		t.Fatalf("send notification: %+v, %v", sent, err)
	}
	return toAPINotification(*sent.Notification)
}

func TestNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.signUp(t, "ada@example.com")
	bob := b.signUp(t, "bob@example.com")
	adaID, bobID := b.currentUser(t, ada.AccessToken).Id, b.currentUser(t, bob.AccessToken).Id
	var sent []api.Notification
	for _, title := range []string{"one", "two", "three"} {
		sent = append(sent, b.notifyUser(t, adaID, title))
	}
	bobs := b.notifyUser(t, bobID, "bob's")

	t.Run("List", func(t *testing.T) {
		var page1, page2 api.NotificationList
		if res := b.call(t, "GET", "/v1/notifications?limit=2", ada.AccessToken, nil, &page1); res.StatusCode != 200 {
			t.Fatalf("list: %d %s", res.StatusCode, readAll(res))
		}
		if len(page1.Data) != 2 || page1.Data[0].Title != "three" || page1.NextCursor == nil || *page1.Data[0].Link != "https://app.example/jobs" {
			t.Fatalf("page 1 = %+v", page1)
		}
		b.call(t, "GET", "/v1/notifications?limit=2&cursor="+*page1.NextCursor, ada.AccessToken, nil, &page2)
		if len(page2.Data) != 1 || page2.Data[0].Title != "one" || page2.NextCursor != nil {
			t.Fatalf("page 2 = %+v", page2)
		}
	})
	t.Run("ReadAndCount", func(t *testing.T) {
		var n api.Notification
		if res := b.call(t, "POST", "/v1/notifications/"+sent[0].Id.String()+"/read", ada.AccessToken, nil, &n); res.StatusCode != 200 || n.ReadAt == nil {
			t.Fatalf("read: %d %+v", res.StatusCode, n)
		}
		var c api.UnreadCount
		b.call(t, "GET", "/v1/notifications/unread-count", ada.AccessToken, nil, &c)
		if c.Unread != 2 {
			t.Errorf("unread = %d, want 2", c.Unread)
		}
		var unread api.NotificationList
		b.call(t, "GET", "/v1/notifications?unread=true", ada.AccessToken, nil, &unread)
		if len(unread.Data) != 2 {
			t.Errorf("%d unread listed, want 2", len(unread.Data))
		}
		var marked api.MarkedRead
		if res := b.call(t, "POST", "/v1/notifications/read-all", ada.AccessToken, nil, &marked); res.StatusCode != 200 || marked.Marked != 2 || marked.Unread != 0 {
			t.Fatalf("read-all: %d %+v", res.StatusCode, marked)
		}
		b.call(t, "GET", "/v1/notifications/unread-count", bob.AccessToken, nil, &c)
		if c.Unread != 1 {
			t.Errorf("bob's unread = %d after ada's read-all, want 1", c.Unread)
		}
	})
	t.Run("ErrOtherUsersNotificationIsNotFound", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/notifications/"+bobs.Id.String()+"/read", ada.AccessToken, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 404 || p.Code != api.ErrorCode(errs.NotFound) {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrAPIKey", func(t *testing.T) {
		key := b.createKey(t, ada.AccessToken, []string{"chat"})
		for _, path := range []string{"/v1/notifications", "/v1/notifications/unread-count", "/v1/me/notification-preferences", "/v1/notifications/stream"} {
			res := b.call(t, "GET", path, key.Key, nil, nil)
			if p := decodeProblem(t, res); res.StatusCode != 403 || p.Code != api.ErrorCode(errs.PermissionDenied) || !strings.Contains(*p.Detail, "access token") {
				t.Errorf("%s with an API key: %d %+v", path, res.StatusCode, p)
			}
		}
	})
	t.Run("ErrBadInput", func(t *testing.T) {
		for _, path := range []string{
			"/v1/notifications/not-a-uuid/read",
			"/v1/notifications?cursor=" + strings.Repeat("A", 600),
			"/v1/notifications?cursor=%00",
			"/v1/notifications?unread=maybe",
			"/v1/notifications?limit=1000",
		} {
			method := "GET"
			if strings.HasSuffix(path, "/read") {
				method = "POST"
			}
			res := b.call(t, method, path, ada.AccessToken, nil, nil)
			if p := decodeProblem(t, res); res.StatusCode != 400 {
				t.Errorf("%s %s: %d %+v, want 400", method, path, res.StatusCode, p)
			}
		}
	})
	t.Run("ErrUnauthenticated", func(t *testing.T) {
		if res := b.call(t, "GET", "/v1/notifications", "", nil, nil); res.StatusCode != 401 {
			t.Fatalf("no credentials: %d", res.StatusCode)
		}
	})
}

func TestNotificationPreferences(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.signUp(t, "ada@example.com")

	var p api.NotificationPreferences
	if res := b.call(t, "GET", "/v1/me/notification-preferences", ada.AccessToken, nil, &p); res.StatusCode != 200 || p.Locale != nil || len(p.Categories) != 6 {
		t.Fatalf("get: %d %+v", res.StatusCode, p)
	}
	t.Run("OK", func(t *testing.T) {
		var got api.NotificationPreferences
		res := b.call(t, "PUT", "/v1/me/notification-preferences", ada.AccessToken,
			map[string]any{"locale": "zh-CN", "categories": []map[string]any{{"category": "jobs", "email": true}, {"category": "product", "in_app": false}}}, &got)
		if res.StatusCode != 200 || got.Locale == nil || *got.Locale != "zh-CN" {
			t.Fatalf("put: %d %+v", res.StatusCode, got)
		}
		for _, c := range got.Categories {
			if (c.Category == "jobs" && (!c.Email || !c.InApp)) || (c.Category == "product" && c.InApp) {
				t.Errorf("%+v", c)
			}
		}
		var again api.NotificationPreferences
		b.call(t, "GET", "/v1/me/notification-preferences", ada.AccessToken, nil, &again)
		if *again.Locale != "zh-CN" {
			t.Errorf("locale not kept: %+v", again)
		}
	})
	t.Run("ErrSecurityCannotBeTurnedOff", func(t *testing.T) {
		res := b.call(t, "PUT", "/v1/me/notification-preferences", ada.AccessToken,
			map[string]any{"categories": []map[string]any{{"category": "security", "in_app": true, "email": false}}}, nil)
		p := decodeProblem(t, res)
		if res.StatusCode != 400 || p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Pointer != "/categories/0/email" ||
			!strings.Contains(*p.Detail, "cannot be turned off") {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrBadInput", func(t *testing.T) {
		for name, body := range map[string]string{
			"unknown category": `{"categories": [{"category": "weather", "email": true}]}`,
			"nul":              `{"categories": [{"category": "jo\u0000bs", "email": true}]}`,
			"oversized":        `{"categories": [{"category": "` + strings.Repeat("j", 33) + `"}]}`,
			"locale":           `{"locale": "fr"}`,
			"unknown field":    `{"sms": true}`,
			"not json":         `{"categories": [`,
		} {
			req := jsonRequest("PUT", "/v1/me/notification-preferences", body)
			req.Header.Set("Authorization", "Bearer "+ada.AccessToken)
			res := b.do(t, req)
			if p := decodeProblem(t, res); res.StatusCode != 400 {
				t.Errorf("%s: %d %+v, want 400", name, res.StatusCode, p)
			}
		}
	})
}

func TestNotificationStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.heartbeat = 50 * time.Millisecond
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	ada := b.signUp(t, "ada@example.com")
	adaID := b.currentUser(t, ada.AccessToken).Id
	bobID := b.currentUser(t, b.signUp(t, "bob@example.com").AccessToken).Id
	b.notifyUser(t, adaID, "before")

	req, err := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/notifications/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ada.AccessToken)
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	events := readEvents(t, res)
	next := func() sseEvent {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("the stream ended")
				}
				if ev.comment {
					continue
				}
				matchSchema(t, eventSchemas[ev.event], []byte(ev.data))
				return ev
			case <-time.After(5 * time.Second):
				t.Fatal("no event within 5s")
			}
		}
	}
	if ev := next(); ev.event != "notification.unread_count" || ev.data != `{"unread":1}` || ev.id != "1" {
		t.Fatalf("first event %+v", ev)
	}
	b.notifyUser(t, bobID, "not for ada")
	want := b.notifyUser(t, adaID, "live")
	ev := next()
	var got api.Notification
	if err := json.Unmarshal([]byte(ev.data), &got); err != nil || ev.event != "notification.created" || got.Id != want.Id || got.Title != "live" {
		t.Fatalf("event %+v", ev)
	}
	// Heartbeats keep the idle stream alive.
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.comment {
				return
			}
			t.Fatalf("unexpected event %+v", ev)
		case <-deadline:
			t.Fatal("no heartbeat")
		}
	}
}

func TestNotificationWebSocketFrame(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	ada := b.signUp(t, "ada@example.com")
	adaID := b.currentUser(t, ada.AccessToken).Id
	ws := dialChat(t, ts, ada.AccessToken)
	channel := b.ks.Key("notify", 1, "user:"+adaID.String())
	waitFor(t, "the WebSocket to subscribe", func() bool {
		n, err := b.rdb.PubSubNumSub(t.Context(), channel).Result()
		return err == nil && n[channel] == 1
	})
	want := b.notifyUser(t, adaID, "on the socket")
	f := ws.read()
	var got api.Notification
	if err := json.Unmarshal(f.Data, &got); err != nil || f.Type != "notification.created" || got.Id != want.Id {
		t.Fatalf("frame %+v", f)
	}
}
