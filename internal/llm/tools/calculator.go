package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The calculator's limits: expressions come from the model, so their size and nesting
// are bounded before any work is done.
const (
	maxExpressionLen   = 256 // characters
	maxExpressionDepth = 64  // nested parentheses, unary operators and powers
)

func calculatorTool() Tool {
	return Tool{
		Name: "calculator",
		Description: "Evaluates an arithmetic expression exactly as written and returns the number. " +
			"Supports + - * / % (remainder), ^ (power, right-associative), unary minus, parentheses, " +
			"decimal numbers (1.5, 2e-3), the constants pi and e, and the functions sqrt, abs, round, " +
			"floor, ceil, ln, log10, min and max (one or more arguments). round(x, n) rounds to n decimals.",
		Parameters: json.RawMessage(`{
			"type": "object",
			"properties": {
				"expression": {"type": "string", "minLength": 1, "maxLength": 256, "description": "The expression, e.g. (2 + 3) * sqrt(16) ^ 2"}
			},
			"required": ["expression"],
			"additionalProperties": false
		}`),
		Handler: handleCalculator,
	}
}

func handleCalculator(_ context.Context, args json.RawMessage) (string, error) {
	var in struct {
		Expression string `json:"expression"`
	}
	if err := json.Unmarshal(args, &in); err != nil {
		return "", fmt.Errorf("calculator: decode arguments: %w", err)
	}
	v, err := evaluate(in.Expression)
	if err != nil {
		return "", fmt.Errorf("calculator: %w", err)
	}
	return formatNumber(v), nil
}

// formatNumber prints v with 15 significant digits, enough to hide binary rounding noise
// (0.1+0.2 prints 0.3), and never as -0.
func formatNumber(v float64) string {
	if v == 0 {
		return "0"
	}
	return strconv.FormatFloat(v, 'g', 15, 64)
}

// evaluate parses and computes an arithmetic expression by recursive descent:
//
//	expr    = term { ("+" | "-") term }
//	term    = unary { ("*" | "/" | "%") unary }
//	unary   = ("-" | "+") unary | power
//	power   = primary [ "^" unary ]
//	primary = number | constant | function "(" expr { "," expr } ")" | "(" expr ")"
//
// so -2^2 is -4 and 2^3^2 is 2^9. Every error says what is wrong and where, and every
// result is finite.
func evaluate(expr string) (float64, error) {
	if n := utf8.RuneCountInString(expr); n > maxExpressionLen {
		return 0, fmt.Errorf("expression is %d characters long, the limit is %d", n, maxExpressionLen)
	}
	p := parser{src: expr}
	p.next()
	v, err := p.expr()
	if err != nil {
		return 0, err
	}
	if p.tok.kind != tokEOF {
		return 0, p.unexpected()
	}
	return v, nil
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokNumber
	tokIdent
	tokOp // one of + - * / % ^ ( ) ,
	tokInvalid
)

type token struct {
	kind tokenKind
	text string
	pos  int // 1-based character position, for messages
	num  float64
	err  error // tokInvalid, tokNumber out of range
}

type parser struct {
	src   string
	off   int // byte offset of the next token
	tok   token
	depth int
}

// next scans the token at p.off into p.tok.
func (p *parser) next() {
	for p.off < len(p.src) && strings.IndexByte(" \t\r\n", p.src[p.off]) >= 0 {
		p.off++
	}
	start := p.off
	pos := utf8.RuneCountInString(p.src[:start]) + 1
	if start == len(p.src) {
		p.tok = token{kind: tokEOF, pos: pos}
		return
	}
	c := p.src[start]
	switch {
	case isDigit(c) || c == '.':
		end := scanNumber(p.src, start)
		text := p.src[start:end]
		p.off = end
		v, err := strconv.ParseFloat(text, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) && math.IsInf(v, 0):
			p.tok = token{kind: tokInvalid, text: text, pos: pos, err: fmt.Errorf("number %s at position %d is too large", text, pos)}
		case err != nil && !errors.Is(err, strconv.ErrRange): // underflow to 0 is fine
			p.tok = token{kind: tokInvalid, text: text, pos: pos, err: fmt.Errorf("malformed number %q at position %d", text, pos)}
		default:
			p.tok = token{kind: tokNumber, text: text, pos: pos, num: v}
		}
	case isLetter(c):
		end := start
		for end < len(p.src) && (isLetter(p.src[end]) || isDigit(p.src[end])) {
			end++
		}
		p.off = end
		p.tok = token{kind: tokIdent, text: p.src[start:end], pos: pos}
	case strings.IndexByte("+-*/%^(),", c) >= 0:
		p.off++
		p.tok = token{kind: tokOp, text: p.src[start:p.off], pos: pos}
	default:
		r, size := utf8.DecodeRuneInString(p.src[start:])
		p.off += size
		p.tok = token{kind: tokInvalid, text: string(r), pos: pos, err: fmt.Errorf("unexpected character %q at position %d", r, pos)}
	}
}

// scanNumber returns the end of the decimal number starting at start: digits with at most
// one point, then an exponent only if digits follow it, so that "2e" leaves the e alone.
func scanNumber(s string, start int) int {
	i := start
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			i = j
		}
	}
	return i
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' }

func (p *parser) is(op string) bool { return p.tok.kind == tokOp && p.tok.text == op }

func (p *parser) unexpected() error {
	switch p.tok.kind {
	case tokEOF:
		return errors.New("unexpected end of expression")
	case tokInvalid:
		return p.tok.err
	}
	return fmt.Errorf("unexpected %q at position %d", p.tok.text, p.tok.pos)
}

func (p *parser) expr() (float64, error) {
	v, err := p.term()
	if err != nil {
		return 0, err
	}
	for p.is("+") || p.is("-") {
		op := p.tok
		p.next()
		w, err := p.term()
		if err != nil {
			return 0, err
		}
		if op.text == "+" {
			v += w
		} else {
			v -= w
		}
		if err := finite(v, op); err != nil {
			return 0, err
		}
	}
	return v, nil
}

func (p *parser) term() (float64, error) {
	v, err := p.unary()
	if err != nil {
		return 0, err
	}
	for p.is("*") || p.is("/") || p.is("%") {
		op := p.tok
		p.next()
		w, err := p.unary()
		if err != nil {
			return 0, err
		}
		switch op.text {
		case "*":
			v *= w
		case "/":
			if w == 0 {
				return 0, fmt.Errorf("division by zero at position %d", op.pos)
			}
			v /= w
		case "%":
			if w == 0 {
				return 0, fmt.Errorf("remainder by zero at position %d", op.pos)
			}
			v = math.Mod(v, w)
		}
		if err := finite(v, op); err != nil {
			return 0, err
		}
	}
	return v, nil
}

// unary is on every path of recursion, so it alone enforces the depth limit.
func (p *parser) unary() (float64, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxExpressionDepth {
		return 0, fmt.Errorf("expression nested too deeply at position %d (limit %d)", p.tok.pos, maxExpressionDepth)
	}
	if p.is("-") || p.is("+") {
		neg := p.tok.text == "-"
		p.next()
		v, err := p.unary()
		if err != nil {
			return 0, err
		}
		if neg {
			v = -v
		}
		return v, nil
	}
	return p.power()
}

func (p *parser) power() (float64, error) {
	base, err := p.primary()
	if err != nil {
		return 0, err
	}
	if !p.is("^") {
		return base, nil
	}
	op := p.tok
	p.next()
	exp, err := p.unary()
	if err != nil {
		return 0, err
	}
	if base == 0 && exp < 0 {
		return 0, fmt.Errorf("zero raised to a negative power at position %d", op.pos)
	}
	if base < 0 && exp != math.Trunc(exp) {
		return 0, fmt.Errorf("negative number raised to a fractional power at position %d", op.pos)
	}
	v := math.Pow(base, exp)
	return v, finite(v, op)
}

func (p *parser) primary() (float64, error) {
	tok := p.tok
	switch {
	case tok.kind == tokNumber:
		p.next()
		return tok.num, nil
	case p.is("("):
		p.next()
		v, err := p.expr()
		if err != nil {
			return 0, err
		}
		if !p.is(")") {
			return 0, p.expected(fmt.Sprintf("')' to close '(' at position %d", tok.pos))
		}
		p.next()
		return v, nil
	case tok.kind == tokIdent:
		p.next()
		name := strings.ToLower(tok.text)
		if c, ok := constants[name]; ok {
			return c, nil
		}
		f, ok := functions[name]
		if !ok {
			return 0, fmt.Errorf("unknown name %q at position %d (constants: pi, e; functions: %s)", tok.text, tok.pos, functionNames)
		}
		if !p.is("(") {
			return 0, p.expected(fmt.Sprintf("'(' after function %s", name))
		}
		p.next()
		var args []float64
		for {
			v, err := p.expr()
			if err != nil {
				return 0, err
			}
			args = append(args, v)
			if !p.is(",") {
				break
			}
			p.next()
		}
		if !p.is(")") {
			return 0, p.expected(fmt.Sprintf("')' to close %s( at position %d", name, tok.pos))
		}
		p.next()
		if len(args) < f.minArgs || f.maxArgs >= 0 && len(args) > f.maxArgs {
			return 0, fmt.Errorf("%s at position %d takes %s, got %d", name, tok.pos, f.arity(), len(args))
		}
		v, err := f.apply(args)
		if err != nil {
			return 0, fmt.Errorf("%s at position %d: %w", name, tok.pos, err)
		}
		return v, finite(v, tok)
	}
	return 0, p.unexpected()
}

func (p *parser) expected(what string) error {
	if p.tok.kind == tokEOF {
		return fmt.Errorf("expected %s, got end of expression", what)
	}
	if p.tok.kind == tokInvalid {
		return p.tok.err
	}
	return fmt.Errorf("expected %s, got %q at position %d", what, p.tok.text, p.tok.pos)
}

// finite rejects an overflowed or undefined result of the operation at op.
func finite(v float64, op token) error {
	switch {
	case math.IsInf(v, 0):
		return fmt.Errorf("result of %q at position %d is too large", op.text, op.pos)
	case math.IsNaN(v):
		return fmt.Errorf("result of %q at position %d is undefined", op.text, op.pos)
	}
	return nil
}

var constants = map[string]float64{"pi": math.Pi, "e": math.E}

type function struct {
	minArgs, maxArgs int // maxArgs < 0: no limit
	apply            func(args []float64) (float64, error)
}

func (f function) arity() string {
	switch {
	case f.maxArgs < 0:
		return fmt.Sprintf("at least %d arguments", f.minArgs)
	case f.minArgs == f.maxArgs && f.minArgs == 1:
		return "1 argument"
	case f.minArgs == f.maxArgs:
		return fmt.Sprintf("%d arguments", f.minArgs)
	}
	return fmt.Sprintf("%d to %d arguments", f.minArgs, f.maxArgs)
}

func unaryFunc(fn func(float64) float64) function {
	return function{1, 1, func(a []float64) (float64, error) { return fn(a[0]), nil }}
}

var functions = map[string]function{
	"sqrt": {1, 1, func(a []float64) (float64, error) {
		if a[0] < 0 {
			return 0, errors.New("square root of a negative number")
		}
		return math.Sqrt(a[0]), nil
	}},
	"abs":   unaryFunc(math.Abs),
	"floor": unaryFunc(math.Floor),
	"ceil":  unaryFunc(math.Ceil),
	"round": {1, 2, roundTo},
	"ln": {1, 1, func(a []float64) (float64, error) {
		if a[0] <= 0 {
			return 0, errors.New("logarithm of a number that is not positive")
		}
		return math.Log(a[0]), nil
	}},
	"log10": {1, 1, func(a []float64) (float64, error) {
		if a[0] <= 0 {
			return 0, errors.New("logarithm of a number that is not positive")
		}
		return math.Log10(a[0]), nil
	}},
	"min": {1, -1, func(a []float64) (float64, error) {
		m := a[0]
		for _, v := range a[1:] {
			m = math.Min(m, v)
		}
		return m, nil
	}},
	"max": {1, -1, func(a []float64) (float64, error) {
		m := a[0]
		for _, v := range a[1:] {
			m = math.Max(m, v)
		}
		return m, nil
	}},
}

const functionNames = "sqrt, abs, round, floor, ceil, ln, log10, min, max"

// roundTo rounds half away from zero, to a[1] decimals when given. Rounding goes through
// the decimal text so that round(1.005, 2) is 1.01, as a person expects, not 1.
func roundTo(a []float64) (float64, error) {
	if len(a) == 1 {
		return math.Round(a[0]), nil
	}
	n := a[1]
	if n != math.Trunc(n) || n < 0 || n > 15 {
		return 0, errors.New("decimals must be a whole number from 0 to 15")
	}
	scale := math.Pow(10, n)
	if math.Abs(a[0]*scale) >= 1<<52 {
		return a[0], nil // no digits below the requested decimals
	}
	v, err := strconv.ParseFloat(strconv.FormatFloat(a[0]*scale, 'f', 6, 64), 64)
	if err != nil {
		return 0, err
	}
	return math.Round(v) / scale, nil
}
