package server

import (
	"context"

	"github.com/google/uuid"
)

// forwardNotifications sends the user's new notifications on their WebSocket as
// notification.created frames until ctx ends. API keys have no notifications.
func (ws *wsConn) forwardNotifications(ctx context.Context) {
	if ws.who.user == uuid.Nil || ws.s.notify == nil {
		return
	}
	sub, err := ws.s.notify.Subscribe(ctx, ws.who.user)
	if err != nil {
		if ctx.Err() == nil {
			ws.s.log.WarnContext(ctx, "subscribe a WebSocket to notifications", "error", err)
		}
		return
	}
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-sub.C:
			if err := ws.send(ctx, "notification.created", toAPINotification(n)); err != nil {
				return
			}
		}
	}
}
