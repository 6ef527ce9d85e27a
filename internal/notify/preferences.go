package notify

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// CategoryPreference is whether a category reaches the user in-app and by email.
type CategoryPreference struct {
	Category Category
	InApp    bool
	Email    bool
	// Locked categories cannot be turned off.
	Locked bool
}

// Preferences are a user's notification settings.
type Preferences struct {
	// Locale is the language of their emails; nil: their org's, else English.
	Locale     *Locale
	Categories []CategoryPreference
}

// CategoryUpdate changes one category; a nil channel stays as it is.
type CategoryUpdate struct {
	Category string
	InApp    *bool
	Email    *bool
}

// PreferencesUpdate changes a user's settings; the categories not listed stay as they are.
type PreferencesUpdate struct {
	Locale     *string // nil: unchanged
	Categories []CategoryUpdate
}

// choices are a user's stored choices over the defaults.
type choices map[Category]map[Channel]bool

// enabled reports whether category reaches the user through channel.
func (c choices) enabled(cat Category, ch Channel) bool {
	info := categories[cat]
	if info.locked {
		return true
	}
	if v, ok := c[cat][ch]; ok {
		return v
	}
	if ch == InApp {
		return info.inApp
	}
	return info.email
}

func preferencesOf(ctx context.Context, q *db.Queries, user uuid.UUID) (choices, error) {
	rows, err := q.ListNotificationPreferences(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("read notification preferences: %w", err)
	}
	c := choices{}
	for _, r := range rows {
		cat := Category(r.Category)
		if c[cat] == nil {
			c[cat] = map[Channel]bool{}
		}
		c[cat][Channel(r.Channel)] = r.Enabled
	}
	return c, nil
}

// Preferences returns a user's settings: every category with its effective channels.
func (c *Center) Preferences(ctx context.Context, user uuid.UUID) (Preferences, error) {
	who, err := c.st.GetRecipient(ctx, db.GetRecipientParams{UserID: user})
	if err != nil {
		return Preferences{}, fmt.Errorf("notification preferences: %w", store.Translate(err))
	}
	ch, err := preferencesOf(ctx, c.st.Queries, user)
	if err != nil {
		return Preferences{}, err
	}
	return preferencesView(who.Locale, ch), nil
}

func preferencesView(locale pgtype.Text, ch choices) Preferences {
	p := Preferences{}
	if l, ok := ParseLocale(locale.String); ok && locale.Valid {
		p.Locale = &l
	}
	for _, cat := range Categories() {
		p.Categories = append(p.Categories, CategoryPreference{
			Category: cat, InApp: ch.enabled(cat, InApp), Email: ch.enabled(cat, Email), Locked: categories[cat].locked,
		})
	}
	return p
}

// SetPreferences applies u to a user's settings and returns them. Every problem is
// reported at once as invalid_request naming its field: an unknown locale (/locale) or
// category (/categories/<i>/category), a category listed twice, and turning off a
// category that cannot be turned off (/categories/<i>/in_app or /email).
func (c *Center) SetPreferences(ctx context.Context, user uuid.UUID, u PreferencesUpdate) (Preferences, error) {
	var bad []errs.FieldError
	seen := map[string]bool{}
	for i, cu := range u.Categories {
		at := fmt.Sprintf("/categories/%d", i)
		info, ok := categories[Category(cu.Category)]
		switch {
		case !ok:
			bad = append(bad, errs.FieldError{Pointer: at + "/category", Message: fmt.Sprintf("is not a notification category (%v)", Categories())})
			continue
		case seen[cu.Category]:
			bad = append(bad, errs.FieldError{Pointer: at + "/category", Message: "is listed twice"})
		}
		seen[cu.Category] = true
		if !info.locked {
			continue
		}
		for _, f := range []struct {
			name string
			v    *bool
		}{{"in_app", cu.InApp}, {"email", cu.Email}} {
			if f.v != nil && !*f.v {
				bad = append(bad, errs.FieldError{Pointer: at + "/" + f.name,
					Message: cu.Category + " notifications cannot be turned off: they tell you of changes to your account's security"})
			}
		}
	}
	var locale pgtype.Text
	if u.Locale != nil {
		l, ok := ParseLocale(*u.Locale)
		if !ok {
			bad = append(bad, errs.FieldError{Pointer: "/locale", Message: fmt.Sprintf("must be one of %v", Locales)})
		}
		locale = pgtype.Text{String: string(l), Valid: true}
	}
	if err := errs.InvalidFields("invalid notification preferences", bad); err != nil {
		return Preferences{}, err
	}
	now := c.now()
	var out Preferences
	err := c.st.InTx(ctx, func(q *db.Queries) error {
		who, err := q.GetRecipient(ctx, db.GetRecipientParams{UserID: user})
		if err != nil {
			return store.Translate(err)
		}
		if u.Locale != nil {
			if err := q.SetUserLocale(ctx, db.SetUserLocaleParams{ID: user, Locale: locale, Now: now}); err != nil {
				return fmt.Errorf("set locale: %w", err)
			}
			who.Locale = locale
		}
		for _, cu := range u.Categories {
			for ch, v := range map[Channel]*bool{InApp: cu.InApp, Email: cu.Email} {
				if v == nil {
					continue
				}
				err := q.SetNotificationPreference(ctx, db.SetNotificationPreferenceParams{
					UserID: user, Category: cu.Category, Channel: string(ch), Enabled: *v, UpdatedAt: now,
				})
				if err != nil {
					return fmt.Errorf("set preference: %w", err)
				}
			}
		}
		ch, err := preferencesOf(ctx, q, user)
		out = preferencesView(who.Locale, ch)
		return err
	})
	if err != nil {
		return Preferences{}, fmt.Errorf("set notification preferences: %w", err)
	}
	return out, nil
}
