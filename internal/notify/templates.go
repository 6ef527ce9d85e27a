package notify

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"slices"
	"strings"
	texttemplate "text/template"

	"github.com/kilnhq/kiln/internal/errs"
)

// Locale is a language emails are written in.
type Locale string

// The locales every template has. English is the fallback.
const (
	English           Locale = "en"
	SimplifiedChinese Locale = "zh-CN"
)

// Locales lists the supported locales.
var Locales = []Locale{English, SimplifiedChinese}

// ParseLocale returns the supported locale s names, or false.
func ParseLocale(s string) (Locale, bool) {
	l := Locale(s)
	return l, slices.Contains(Locales, l)
}

// The email templates. The identity emails (verification, password reset, password
// changed, invitation) are written here for the identity code to send through QueueEmail;
// notification carries a notification's title, body and link.
const (
	TemplateVerification    = "verification"
	TemplatePasswordReset   = "password_reset"
	TemplatePasswordChanged = "password_changed"
	TemplateInvitation      = "invitation"
	TemplateNotification    = "notification"
)

// templateFields are the data each template reads: required ones must be non-empty,
// optional ones default to "".
var templateFields = map[string]struct{ required, optional []string }{
	TemplateVerification:    {required: []string{"email", "link"}},
	TemplatePasswordReset:   {required: []string{"email", "link"}},
	TemplatePasswordChanged: {required: []string{"email", "link"}},
	TemplateInvitation:      {required: []string{"inviter", "org", "role", "link"}},
	TemplateNotification:    {required: []string{"title"}, optional: []string{"body", "link"}},
}

//go:embed templates
var templateFS embed.FS

// localized is one template in one locale.
type localized struct {
	text *texttemplate.Template // defines subject and text
	html *htmltemplate.Template // layout around the template's content
}

// templates are parsed once; a template missing from a locale fails every test at start.
var templates = mustParseTemplates()

func mustParseTemplates() map[string]map[Locale]localized {
	out := map[string]map[Locale]localized{}
	for name := range templateFields {
		out[name] = map[Locale]localized{}
		for _, l := range Locales {
			text := texttemplate.Must(texttemplate.New(name).Option("missingkey=error").
				ParseFS(templateFS, "templates/"+string(l)+"/"+name+".txt"))
			html := htmltemplate.Must(htmltemplate.New(name).Option("missingkey=error").
				ParseFS(templateFS, "templates/layout.html", "templates/"+string(l)+"/"+name+".html"))
			out[name][l] = localized{text: text, html: html}
		}
	}
	return out
}

// Rendered is an email ready to send.
type Rendered struct {
	Subject string
	Text    string
	HTML    string
}

// checkTemplate validates a template name and its data, filling in optional fields. The
// errors are invalid_request naming /template or /data/<field>.
func checkTemplate(name string, data map[string]string) (map[string]string, error) {
	fields, ok := templateFields[name]
	if !ok {
		return nil, errs.InvalidFields("invalid email", []errs.FieldError{{Pointer: "/template", Message: "is not an email template"}})
	}
	out := make(map[string]string, len(data)+len(fields.optional))
	for k, v := range data {
		out[k] = v
	}
	var bad []errs.FieldError
	for _, f := range fields.required {
		if strings.TrimSpace(out[f]) == "" {
			bad = append(bad, errs.FieldError{Pointer: "/data/" + f, Message: "is required by the " + name + " template"})
		}
	}
	for _, f := range fields.optional {
		if _, ok := out[f]; !ok {
			out[f] = ""
		}
	}
	return out, errs.InvalidFields("invalid email", bad)
}

// Render writes template name in locale (English when the locale is not supported) with
// data: the text part with text/template, the HTML part with html/template, so data is
// escaped in HTML and links are checked for safe schemes.
func Render(name string, locale Locale, data map[string]string) (Rendered, error) {
	data, err := checkTemplate(name, data)
	if err != nil {
		return Rendered{}, err
	}
	t, ok := templates[name][locale]
	if !ok {
		locale, t = English, templates[name][English]
	}
	var subject, text, html bytes.Buffer
	if err := t.text.ExecuteTemplate(&subject, "subject", data); err != nil {
		return Rendered{}, fmt.Errorf("render %s subject: %w", name, err)
	}
	if err := t.text.ExecuteTemplate(&text, "text", data); err != nil {
		return Rendered{}, fmt.Errorf("render %s text: %w", name, err)
	}
	// A subject is one line, whatever the data held.
	subj := strings.Join(strings.Fields(subject.String()), " ")
	page := struct {
		Lang, Subject string
		Data          map[string]string
	}{string(locale), subj, data}
	if err := t.html.ExecuteTemplate(&html, "layout", page); err != nil {
		return Rendered{}, fmt.Errorf("render %s html: %w", name, err)
	}
	return Rendered{Subject: subj, Text: strings.TrimLeft(text.String(), "\n"), HTML: html.String()}, nil
}
