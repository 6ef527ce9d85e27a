package tools

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		expr string
		want string
	}{
		{"OKNumber", "42", "42"},
		{"OKDecimal", "3.25", "3.25"},
		{"OKLeadingPoint", ".5 + 1.", "1.5"},
		{"OKExponentNotation", "2e3 + 1.5E-1", "2000.15"},
		{"OKWhitespace", " \t1 +\n2 ", "3"},
		{"OKPrecedence", "2 + 3 * 4", "14"},
		{"OKLeftAssociativeMinus", "10 - 4 - 3", "3"},
		{"OKLeftAssociativeDivide", "100 / 10 / 5", "2"},
		{"OKParentheses", "(2 + 3) * 4", "20"},
		{"OKNestedParentheses", "((((1))))+((2)*(3))", "7"},
		{"OKPowerRightAssociative", "2 ^ 3 ^ 2", "512"},
		{"OKPowerBindsTighterThanUnaryMinus", "-2 ^ 2", "-4"},
		{"OKNegativeExponent", "2 ^ -2", "0.25"},
		{"OKNegativeBaseInParentheses", "(-2) ^ 3", "-8"},
		{"OKPowerBeforeMultiply", "3 * 2 ^ 2", "12"},
		{"OKUnaryMinus", "-3 - -3", "0"},
		{"OKDoubleUnary", "--3 + +2", "5"},
		{"OKModulo", "17 % 5", "2"},
		{"OKModuloNegative", "-7 % 3", "-1"},
		{"OKModuloPrecedence", "1 + 10 % 4 * 2", "5"},
		{"OKFloatNoise", "0.1 + 0.2", "0.3"},
		{"OKThirds", "1 / 3", "0.333333333333333"},
		{"OKLarge", "2 ^ 60", "1.15292150460685e+18"},
		{"OKSmall", "1 / 2 ^ 20", "9.5367431640625e-07"},
		{"OKNegativeZero", "-0", "0"},
		{"OKPi", "pi", "3.14159265358979"},
		{"OKE", "e", "2.71828182845905"},
		{"OKConstantCaseInsensitive", "PI * 2", "6.28318530717959"},
		{"OKSqrt", "sqrt(16) + sqrt(2)^2", "6"},
		{"OKAbs", "abs(-3.5)", "3.5"},
		{"OKRound", "round(2.5) + round(-2.5)", "0"},
		{"OKRoundDecimals", "round(1.005, 2)", "1.01"},
		{"OKRoundDecimalsLarge", "round(1e300, 15)", "1e+300"},
		{"OKFloorCeil", "floor(-1.5) * ceil(1.2)", "-4"},
		{"OKLn", "ln(e ^ 3)", "3"},
		{"OKLog10", "log10(1000)", "3"},
		{"OKMinMax", "min(3, 1, 2) + max(4, -1)", "5"},
		{"OKMinSingle", "min(7)", "7"},
		{"OKFunctionOfExpression", "max(1 + 1, 2 * 3) ^ 2", "36"},
		{"OKUnderflowIsZero", "1e-400", "0"},
		{"OKDeepNesting", strings.Repeat("(", 30) + "1" + strings.Repeat(")", 30), "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := evaluate(tt.expr)
			if err != nil {
				t.Fatalf("evaluate(%q): %v", tt.expr, err)
			}
			if got := formatNumber(v); got != tt.want {
				t.Fatalf("evaluate(%q) = %s, want %s", tt.expr, got, tt.want)
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		expr string
		want string
	}{
		{"ErrEmpty", "", "unexpected end of expression"},
		{"ErrBlank", "   ", "unexpected end of expression"},
		{"ErrDivisionByZero", "1 / (2 - 2)", "division by zero at position 3"},
		{"ErrRemainderByZero", "5 % 0", "remainder by zero at position 3"},
		{"ErrZeroToNegativePower", "0 ^ -1", "zero raised to a negative power at position 3"},
		{"ErrNegativeFractionalPower", "(-8) ^ (1/3)", "negative number raised to a fractional power"},
		{"ErrOverflowPower", "10 ^ 400", `result of "^" at position 4 is too large`},
		{"ErrOverflowMultiply", "1e300 * 1e300", `result of "*" at position 7 is too large`},
		{"ErrOverflowAdd", "1.7e308 + 1.7e308", `result of "+" at position 9 is too large`},
		{"ErrNumberTooLarge", "1e400", "number 1e400 at position 1 is too large"},
		{"ErrSqrtNegative", "sqrt(-1)", "sqrt at position 1: square root of a negative number"},
		{"ErrLnZero", "ln(0)", "ln at position 1: logarithm of a number that is not positive"},
		{"ErrLog10Negative", "log10(-5)", "log10 at position 1: logarithm"},
		{"ErrRoundDecimals", "round(1.5, 0.5)", "decimals must be a whole number from 0 to 15"},
		{"ErrArity", "sqrt(1, 2)", "sqrt at position 1 takes 1 argument, got 2"},
		{"ErrArityRound", "round(1, 2, 3)", "round at position 1 takes 1 to 2 arguments, got 3"},
		{"ErrNoArguments", "max()", `unexpected ")" at position 5`},
		{"ErrUnknownName", "foo(2)", `unknown name "foo" at position 1`},
		{"ErrUnknownConstant", "2 * tau", `unknown name "tau" at position 5`},
		{"ErrFunctionWithoutParentheses", "sqrt 4", "expected '(' after function sqrt, got \"4\" at position 6"},
		{"ErrUnclosedParenthesis", "(1 + 2", "expected ')' to close '(' at position 1, got end of expression"},
		{"ErrUnclosedCall", "max(1, 2", "expected ')' to close max( at position 1, got end of expression"},
		{"ErrExtraParenthesis", "(1 + 2))", `unexpected ")" at position 8`},
		{"ErrTrailingOperator", "1 +", "unexpected end of expression"},
		{"ErrDoubleOperator", "2 * * 3", `unexpected "*" at position 5`},
		{"ErrImplicitMultiplication", "2(3)", `unexpected "(" at position 2`},
		{"ErrTwoPoints", "1.2.3", `unexpected ".3"`},
		{"ErrLonePoint", ".", `malformed number "." at position 1`},
		{"ErrBadCharacter", "2 & 3", `unexpected character '&' at position 3`},
		{"ErrUnicodeCharacter", "2 × 3", `unexpected character '×' at position 3`},
		{"ErrAssignment", "x = 3", `unknown name "x"`},
		{"ErrTooLong", strings.Repeat("1+", 128) + "1", "expression is 257 characters long, the limit is 256"},
		{"ErrTooDeepParentheses", strings.Repeat("(", 65) + "1" + strings.Repeat(")", 65), "nested too deeply"},
		{"ErrTooDeepUnary", strings.Repeat("-", 100) + "1", "nested too deeply"},
		{"ErrTooDeepPower", strings.Repeat("1^", 100) + "1", "nested too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := evaluate(tt.expr)
			if err == nil {
				t.Fatalf("evaluate(%q) = %v, want an error containing %q", tt.expr, v, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("evaluate(%q) error = %q, want it to contain %q", tt.expr, err, tt.want)
			}
		})
	}
}

func TestCalculatorTool(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Builtins()...)
	tests := []struct {
		name      string
		args      string
		want      string
		wantError bool
	}{
		{"OK", `{"expression":"(1 + 2) * 3"}`, "9", false},
		{"ErrEvaluation", `{"expression":"1/0"}`, "calculator: division by zero at position 2", true},
		{"ErrMissingExpression", `{}`, "missing property 'expression'", true},
		{"ErrExpressionNotString", `{"expression":12}`, "- /expression: got number, want string", true},
		{"ErrExpressionTooLong", `{"expression":"` + strings.Repeat("1", 257) + `"}`, "- /expression: maxLength: got 257, want 256", true},
		{"ErrExtraArgument", `{"expression":"1","precision":3}`, "additional properties 'precision' not allowed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := r.Run(t.Context(), llm.ToolCall{Name: "calculator", Arguments: tt.args}, time.Second)
			if res.IsError != tt.wantError || !strings.Contains(res.Content, tt.want) {
				t.Fatalf("Run(%s) = %+v, want IsError %t and content containing %q", tt.args, res, tt.wantError, tt.want)
			}
		})
	}
}

func FuzzCalculator(f *testing.F) {
	for _, seed := range []string{
		"1+2*3", "2^3^2", "-2^2", "(1", "max(1,2,3)", "round(1.005, 2)", "1e308*10", "1/0",
		"sqrt(-1)", ".", "1.2.3", "2e", "2e+", "((((", "----1", "pi*e", "ln(0)", "5 % 0", "× ÷",
		"min(", "abs(,)", "1e-400", "0^-1", "(-8)^(1/3)",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		v, err := evaluate(expr)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("evaluate(%q) returned an empty error", expr)
			}
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("evaluate(%q) = %v, want a finite number or an error", expr, v)
		}
	})
}
