package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/token"
)

// keyRotationSchedule is the built-in schedule of the signing-key rotation job, there when
// auth.signing_key_rotation is set; a jobs.schedules.signing_key_rotation entry replaces it.
const keyRotationSchedule = "signing_key_rotation"

// rotateSigningKey makes a new signing key, always when maxAge is 0 (kiln keys rotate), or
// only when the key that signs is at least maxAge old (the scheduled job), and audits it. It
// returns the new kid, or "" when it did not rotate.
func rotateSigningKey(ctx context.Context, d *deps, maxAge time.Duration) (string, error) {
	var kid string
	var err error
	if maxAge == 0 {
		kid, err = d.identity.Tokens.Rotate(ctx)
	} else {
		kid, err = d.identity.Tokens.RotateIfOlder(ctx, maxAge)
	}
	if err != nil || kid == "" {
		return "", err
	}
	data := map[string]any{}
	if maxAge > 0 {
		data["scheduled_after"] = maxAge.String()
	}
	return kid, d.identity.Audit.Record(ctx, audit.Actor{Type: audit.ActorSystem},
		audit.Event{Action: "token.key_rotate", TargetType: "signing_key", TargetID: kid, Data: data})
}

// printKeyStatus writes one line per signing key (kid, state, age, created, until) and when
// the next scheduled rotation is due.
func printKeyStatus(w io.Writer, keys []token.KeyStatus, rotation time.Duration, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tAGE\tCREATED\tVERIFIES UNTIL")
	for _, k := range keys {
		until := "-"
		if !k.Until.IsZero() {
			until = k.Until.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Kid, k.State, age(now.Sub(k.CreatedAt)), k.CreatedAt.UTC().Format(time.RFC3339), until)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	switch {
	case rotation == 0:
		_, err = fmt.Fprintln(w, "scheduled rotation: off (auth.signing_key_rotation is 0); rotate with: kiln keys rotate")
	case len(keys) == 0 || keys[0].State != token.KeySigning:
		_, err = fmt.Fprintln(w, "no key signs: one is made when the server starts")
	default:
		_, err = fmt.Fprintf(w, "scheduled rotation: every %s; next due %s\n",
			rotation, keys[0].CreatedAt.Add(rotation).UTC().Format(time.RFC3339))
	}
	return err
}

// age is d rounded for people: days and hours, or hours and minutes, or minutes.
func age(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	default:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
}
