package account_test

import (
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/account"
)

func TestNormaliseEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ada@example.com":          "ada@example.com",
		" ADA@Example.COM\t":       "ada@example.com",
		"ｆｏｏ@example.com":          "foo@example.com",  // full-width letters
		"ＡＤＡ＠ＥＸＡＭＰＬＥ．ＣＯＭ":          "ada@example.com",  // full-width capitals, at sign and dot
		"\u3000ada@example.com":    "ada@example.com",  // an ideographic space, trimmed after NFKC
		"ﬁnn@example.com":          "finn@example.com", // the ligature ﬁ
		"ada@ｅxample.com":          "ada@example.com",
		"ＰＲＩＭＥＲ@пример.рф":         "primer@пример.рф",
		"ДЖОН@example.com":         "джон@example.com",
		"ada\u200b@example.com":    "ada\u200b@example.com", // kept, for EmailProblem to refuse
		"KELVIN\u212a@example.com": "kelvink@example.com",   // the Kelvin sign is a K
	} {
		got := account.NormaliseEmail(in)
		if got != want {
			t.Errorf("NormaliseEmail(%q) = %q, want %q", in, got, want)
		}
		if again := account.NormaliseEmail(got); again != got {
			t.Errorf("NormaliseEmail is not idempotent on %q: %q then %q", in, got, again)
		}
	}
}

func TestEmailProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		email string
		want  string
	}{
		{"OK", "bob@example.com", ""},
		{"OKPlusAndSubdomains", "bob+acme@mail.example.co.uk", ""},
		{"OKCyrillicLocalAndDomain", "иван@пример.рф", ""},
		{"OKCyrillicLocalLatinDomain", "иван@example.com", ""}, // each part is judged alone
		{"OKGreek", "αλέξης@example.gr", ""},
		{"OKJapanese", "たなか太郎カナ@example.jp", ""},
		{"OKLatinWithHan", "tanaka太郎@example.jp", ""},
		{"OKChinese", "王ㄅ@example.cn", ""},
		{"OKKorean", "김철수漢@example.kr", ""},
		{"OKDigitsAndPunctuation", "ivan.1990-x_y@пример.рф", ""},
		{"OKCombiningMark", "zoe\u0301@example.com", ""}, // Inherited goes with any script
		{"OKArabic", "محمد@example.com", ""},

		{"ErrEmpty", "", account.EmailMalformed},
		{"ErrNoAt", "bob", account.EmailMalformed},
		{"ErrNoLocal", "@example.com", account.EmailMalformed},
		{"ErrNoDomain", "bob@", account.EmailMalformed},
		{"ErrTwoAts", "bob@ex@ample.com", account.EmailMalformed},
		{"ErrNoDot", "bob@localhost", account.EmailMalformed},
		{"ErrEmptyLabel", "bob@example..com", account.EmailMalformed},
		{"ErrLongLocal", strings.Repeat("a", 65) + "@x.io", account.EmailMalformed},
		{"ErrLong", strings.Repeat("a", 50) + "@" + strings.Repeat("b", 210) + ".io", account.EmailMalformed},
		{"ErrSpace", "bob smith@example.com", account.EmailMalformed},
		{"ErrHeaderInjection", "bob@example.com\r\nBcc: x@example.com", account.EmailMalformed},
		{"ErrNUL", "bob\x00@example.com", account.EmailMalformed},
		{"ErrPrivateUse", "bob\ue000@example.com", account.EmailMalformed},
		{"ErrUnassigned", "bob\u0378@example.com", account.EmailMalformed},
		{"ErrInvalidUTF8", "bob\xff@example.com", account.EmailMalformed},

		{"ErrRightToLeftOverride", "bob\u202e@example.com", account.EmailInvisible},
		{"ErrIsolate", "\u2066bob\u2069@example.com", account.EmailInvisible},
		{"ErrZeroWidthSpace", "bo\u200bb@example.com", account.EmailInvisible},
		{"ErrZeroWidthJoiner", "bo\u200db@example.com", account.EmailInvisible},
		{"ErrByteOrderMark", "\ufeffbob@example.com", account.EmailInvisible},
		{"ErrSoftHyphen", "bob@exam\u00adple.com", account.EmailInvisible},
		{"ErrHangulFiller", "bob\u3164@example.com", account.EmailInvisible},
		{"ErrVariationSelector", "bob\ufe0f@example.com", account.EmailInvisible},

		{"ErrLatinCyrillicLocal", "p\u0430ypal@example.com", account.EmailMixedScripts}, // Cyrillic а
		{"ErrLatinCyrillicDomain", "bob@p\u0430ypal.com", account.EmailMixedScripts},
		{"ErrLatinCyrillicTLD", "bob@example.c\u043em", account.EmailMixedScripts},
		{"ErrLatinGreek", "b\u03bfb@example.com", account.EmailMixedScripts}, // Greek ο
		{"ErrCyrillicGreek", "\u0438\u03b1@example.com", account.EmailMixedScripts},
		{"ErrLatinArmenian", "g\u0585\u0585gle@example.com", account.EmailMixedScripts}, // Armenian օ
		{"ErrHiraganaHangul", "たなか김@example.com", account.EmailMixedScripts},
		{"ErrCyrillicHan", "иван漢@example.com", account.EmailMixedScripts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := account.EmailProblem(tt.email); got != tt.want {
				t.Errorf("EmailProblem(%q) = %q, want %q", tt.email, got, tt.want)
			}
		})
	}
}

// FuzzEmail checks that the fold is idempotent and that an address the rule takes still
// passes once folded again, whatever the input.
func FuzzEmail(f *testing.F) {
	for _, s := range []string{"ada@example.com", "ｆｏｏ＠ｅｘａｍｐｌｅ．ｃｏｍ", "p\u0430ypal@example.com", "bob\u202e@x.io", "İ@x.io", "\u3000a@b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		folded := account.NormaliseEmail(s)
		if again := account.NormaliseEmail(folded); again != folded {
			t.Fatalf("NormaliseEmail(%q) = %q, then %q", s, folded, again)
		}
		_ = account.EmailProblem(folded)
	})
}
