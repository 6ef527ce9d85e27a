package rag

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kilnhq/kiln/internal/errs"
)

// Condition is one metadata condition of a filter.
type Condition struct {
	Field string
	Op    string // eq, in, gt, gte, lt, lte
	Value any    // a scalar; for in, a []any of scalars
}

// Filter is a conjunction of metadata conditions.
type Filter []Condition

var filterOps = []string{"eq", "in", "gt", "gte", "lt", "lte"}

// ParseFilter reads a search's filter: each key a metadata field, each value the value
// it must equal or an object of operators (eq, in, gt, gte, lt, lte). Field errors point
// under /filter.
func ParseFilter(raw map[string]any) (Filter, error) {
	var (
		f      Filter
		fields []errs.FieldError
	)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := "/filter/" + pointerEscaper.Replace(k)
		if !metadataKey.MatchString(k) && k != "document_id" {
			fields = append(fields, errs.FieldError{Pointer: p, Message: "names no metadata field (1 to 64 letters, digits, '_', '.' or '-')"})
			continue
		}
		ops, isObject := raw[k].(map[string]any)
		if !isObject {
			if !scalar(raw[k]) {
				fields = append(fields, errs.FieldError{Pointer: p, Message: "must be a string, number or boolean, or an object of operators (eq, in, gt, gte, lt, lte)"})
				continue
			}
			f = append(f, Condition{Field: k, Op: "eq", Value: normalize(raw[k])})
			continue
		}
		if len(ops) == 0 {
			fields = append(fields, errs.FieldError{Pointer: p, Message: "has no operator (eq, in, gt, gte, lt, lte)"})
		}
		opNames := make([]string, 0, len(ops))
		for op := range ops {
			opNames = append(opNames, op)
		}
		sort.Strings(opNames)
		for _, op := range opNames {
			v := ops[op]
			pp := p + "/" + pointerEscaper.Replace(op)
			switch {
			case !slices.Contains(filterOps, op):
				fields = append(fields, errs.FieldError{Pointer: pp, Message: "is not an operator: use eq, in, gt, gte, lt or lte"})
			case op == "in":
				list, ok := v.([]any)
				if !ok || len(list) == 0 || len(list) > 100 || !slices.ContainsFunc(list, scalar) || slices.ContainsFunc(list, func(x any) bool { return !scalar(x) }) {
					fields = append(fields, errs.FieldError{Pointer: pp, Message: "must be a list of 1 to 100 strings, numbers or booleans"})
					continue
				}
				norm := make([]any, len(list))
				for i, x := range list {
					norm[i] = normalize(x)
				}
				f = append(f, Condition{Field: k, Op: op, Value: norm})
			case op == "eq":
				if !scalar(v) {
					fields = append(fields, errs.FieldError{Pointer: pp, Message: "must be a string, number or boolean"})
					continue
				}
				f = append(f, Condition{Field: k, Op: op, Value: normalize(v)})
			default:
				if _, isBool := v.(bool); isBool || !scalar(v) {
					fields = append(fields, errs.FieldError{Pointer: pp, Message: "must be a number or a string"})
					continue
				}
				f = append(f, Condition{Field: k, Op: op, Value: normalize(v)})
			}
		}
	}
	if len(fields) > 0 {
		return nil, errs.InvalidFields("invalid filter", fields)
	}
	return f, nil
}

func scalar(v any) bool {
	switch v.(type) {
	case string, bool, float64, json.Number, int, int64:
		return true
	}
	return false
}

// normalize turns numbers into float64 (json.Number from the decoder included).
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case int:
		return float64(x)
	case int64:
		return float64(x)
	}
	return v
}

// sql renders the filter as conditions on the chunks' alias c, appending its arguments
// to args (placeholders continue from len(args)+1).
func (f Filter) sql(args []any) (string, []any) {
	var parts []string
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	for _, c := range f {
		if c.Field == "document_id" {
			parts = append(parts, documentCondition(c, arg))
			continue
		}
		switch c.Op {
		case "eq":
			b, _ := json.Marshal(map[string]any{c.Field: c.Value})
			parts = append(parts, "c.metadata @> "+arg(string(b))+"::jsonb")
		case "in":
			vals := make([]string, len(c.Value.([]any)))
			for i, v := range c.Value.([]any) {
				b, _ := json.Marshal(v)
				vals[i] = string(b)
			}
			parts = append(parts, "c.metadata -> "+arg(c.Field)+"::text = ANY("+arg(vals)+"::jsonb[])")
		default:
			cmp := map[string]string{"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[c.Op]
			field := arg(c.Field)
			if n, ok := c.Value.(float64); ok {
				parts = append(parts, fmt.Sprintf("(CASE WHEN jsonb_typeof(c.metadata -> %s::text) = 'number' THEN (c.metadata ->> %s::text)::numeric END) %s %s::numeric", field, field, cmp, arg(n)))
			} else {
				parts = append(parts, fmt.Sprintf("(CASE WHEN jsonb_typeof(c.metadata -> %s::text) = 'string' THEN c.metadata ->> %s::text END) COLLATE \"C\" %s %s::text", field, field, cmp, arg(c.Value)))
			}
		}
	}
	if len(parts) == 0 {
		return "", args
	}
	return " AND " + strings.Join(parts, " AND "), args
}

// documentCondition filters on the chunk's document id (eq or in).
func documentCondition(c Condition, arg func(any) string) string {
	var ids []string
	switch v := c.Value.(type) {
	case string:
		ids = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				ids = append(ids, s)
			}
		}
	}
	return "c.document_id::text = ANY(" + arg(ids) + "::text[])"
}
