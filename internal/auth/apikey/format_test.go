package apikey_test

import (
	"crypto/sha256"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
)

// base62Digits lists the base62 digits by value.
const base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var keyPattern = regexp.MustCompile(`^kiln_[a-z0-9]{1,8}_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$`)

func TestGenerate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		env     string
		wantErr bool
	}{
		{"OK", "live", false},
		{"OKOneChar", "t", false},
		{"OKEightChars", "staging1", false},
		{"ErrInvalidEmptyEnv", "", true},
		{"ErrInvalidEnvTooLong", "production", true},
		{"ErrInvalidUppercaseEnv", "Live", true},
		{"ErrInvalidUnderscoreInEnv", "my_env", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := apikey.Generate(tt.env)
			if tt.wantErr {
				if errs.CodeOf(err) != errs.Invalid {
					t.Fatalf("Generate(%q) = %q, %v; want invalid_request", tt.env, key, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Generate(%q): %v", tt.env, err)
			}
			if !keyPattern.MatchString(key) || !strings.HasPrefix(key, "kiln_"+tt.env+"_") {
				t.Errorf("Generate(%q) = %q, want kiln_%s_<32 base62>_<6 base62>", tt.env, key, tt.env)
			}
			p, ok := apikey.Parse(key)
			if !ok || p.Env != tt.env || key != "kiln_"+tt.env+"_"+p.Random+key[len(key)-7:] {
				t.Errorf("Parse(%q) = %+v, %v", key, p, ok)
			}
			body, checksum := key[:len(key)-7], key[len(key)-6:]
			var sum uint64
			for _, c := range checksum {
				sum = sum*62 + uint64(strings.IndexRune(base62Digits, c))
			}
			if want := crc32.ChecksumIEEE([]byte(body)); sum != uint64(want) {
				t.Errorf("checksum %q is %d, want CRC32 (IEEE) of %q = %d", checksum, sum, body, want)
			}
		})
	}
}

func TestGenerateIsRandom(t *testing.T) {
	t.Parallel()
	const n = 2000
	seen := make(map[string]bool, n)
	var counts [256]int
	for range n {
		key, err := apikey.Generate("test")
		if err != nil {
			t.Fatal(err)
		}
		p, _ := apikey.Parse(key)
		if seen[p.Random] {
			t.Fatalf("random part %q drawn twice", p.Random)
		}
		seen[p.Random] = true
		for i := range len(p.Random) {
			counts[p.Random[i]]++
		}
	}
	// 64000 characters over 62 symbols: about 1032 each; a biased draw (b % 62 without
	// rejection) would give the first 8 symbols about 1.3 times as many.
	for _, c := range base62Digits {
		if got := counts[c]; got < 850 || got > 1220 {
			t.Errorf("symbol %q drawn %d times, want about 1032", c, got)
		}
	}
}

// mustGenerate returns a new key for env.
func mustGenerate(t testing.TB, env string) string {
	t.Helper()
	key, err := apikey.Generate(env)
	if err != nil {
		t.Fatalf("Generate(%q): %v", env, err)
	}
	return key
}

// withChar returns s with the byte at i replaced by c.
func withChar(s string, i int, c byte) string {
	b := []byte(s)
	b[i] = c
	return string(b)
}

func TestParse(t *testing.T) {
	t.Parallel()
	valid := mustGenerate(t, "live")
	body, checksum := valid[:len(valid)-7], valid[len(valid)-6:]
	other := mustGenerate(t, "live")
	for _, tt := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"OK", valid, true},
		{"OKOtherEnv", mustGenerate(t, "t"), true},
		{"RejectsEmpty", "", false},
		{"RejectsPrefixOnly", "kiln_", false},
		{"RejectsWrongPrefix", "kilm" + valid[4:], false},
		{"RejectsUppercasePrefix", "KILN" + valid[4:], false},
		{"RejectsBearerPrefix", "Bearer " + valid, false},
		{"RejectsTrailingSpace", valid + " ", false},
		{"RejectsTruncated", valid[:len(valid)-1], false},
		{"RejectsChecksumMissing", body, false},
		{"RejectsRandomTooShort", "kiln_live_" + strings.Repeat("a", 31) + "_" + checksum, false},
		{"RejectsRandomTooLong", "kiln_live_" + strings.Repeat("a", 33) + "_" + checksum, false},
		{"RejectsEmptyEnv", "kiln__" + valid[len("kiln_live_"):], false},
		{"RejectsEnvTooLong", "kiln_abcdefghi_" + valid[len("kiln_live_"):], false},
		{"RejectsUppercaseEnv", "kiln_LIVE_" + valid[len("kiln_live_"):], false},
		{"RejectsNonBase62InRandom", withChar(valid, len("kiln_live_")+3, '-'), false},
		{"RejectsNonASCIIInRandom", withChar(valid, len("kiln_live_")+3, 0xc3), false},
		{"RejectsMissingSeparator", withChar(valid, len(valid)-7, 'x'), false},
		{"RejectsChangedRandom", withChar(valid, len("kiln_live_"), flip(valid[len("kiln_live_")])), false},
		{"RejectsChangedEnv", "kiln_lave_" + valid[len("kiln_live_"):], false},
		{"RejectsChangedChecksum", withChar(valid, len(valid)-1, flip(valid[len(valid)-1])), false},
		{"RejectsOtherKeysChecksum", body + other[len(other)-7:], false},
		{"RejectsChecksumAboveUint32", body + "_zzzzzz", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, ok := apikey.Parse(tt.in)
			if ok != tt.ok {
				t.Fatalf("Parse(%q) = %+v, %v; want ok %v", tt.in, p, ok, tt.ok)
			}
			if !ok && p != (apikey.Parsed{}) {
				t.Errorf("Parse(%q) = %+v with ok false, want the zero Parsed", tt.in, p)
			}
		})
	}
}

// flip returns another base62 character than c.
func flip(c byte) byte {
	if c == 'a' {
		return 'b'
	}
	return 'a'
}

func TestDisplay(t *testing.T) {
	t.Parallel()
	key := mustGenerate(t, "live")
	p, _ := apikey.Parse(key)
	for _, tt := range []struct {
		name string
		in   string
		want string
	}{
		{"OK", key, "kiln_live_" + p.Random[:6] + "…"},
		{"EmptyForMalformed", "kiln_live_short", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := apikey.Display(tt.in); got != tt.want {
				t.Errorf("Display(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	key := mustGenerate(t, "live")
	want := sha256.Sum256([]byte(key))
	if got := apikey.Hash(key); string(got) != string(want[:]) {
		t.Errorf("Hash = %x, want SHA-256 %x", got, want)
	}
	if long := strings.Repeat("x", 1000); string(apikey.Hash(long)) == string(apikey.Hash(long[:999])) {
		t.Error("Hash ignores the end of a long input")
	}
}

// FuzzParse checks that Parse never panics, accepts only what the format allows, accepts
// every generated key and rejects every single-character change to one.
func FuzzParse(f *testing.F) {
	for _, env := range []string{"live", "test", "a", "staging1"} {
		f.Add(mustGenerate(f, env), env, uint16(7), byte('x'))
	}
	f.Add("", "", uint16(0), byte(0))
	f.Add("kiln_live_", "LIVE", uint16(3), byte('_'))
	f.Add("kiln_live_0000000000000000000000000000000_000000", "toolongenv", uint16(60), byte(0xff))
	envPattern := regexp.MustCompile(`^[a-z0-9]{1,8}$`)
	f.Fuzz(func(t *testing.T, s, env string, pos uint16, c byte) {
		if p, ok := apikey.Parse(s); ok {
			if !keyPattern.MatchString(s) || s[:len(s)-7] != "kiln_"+p.Env+"_"+p.Random {
				t.Fatalf("Parse(%q) accepted it as %+v", s, p)
			}
		}
		key, err := apikey.Generate(env)
		if err != nil {
			if envPattern.MatchString(env) {
				t.Fatalf("Generate(%q): %v", env, err)
			}
			return
		}
		p, ok := apikey.Parse(key)
		if !ok || p.Env != env {
			t.Fatalf("Parse(Generate(%q) = %q) = %+v, %v", env, key, p, ok)
		}
		i := int(pos) % len(key)
		if key[i] == c {
			return
		}
		changed := withChar(key, i, c)
		if _, ok := apikey.Parse(changed); ok {
			t.Fatalf("Parse accepted %q: byte %d of %q changed to %q", changed, i, key, c)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	key := mustGenerate(b, "live")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := apikey.Parse(key); !ok {
			b.Fatal("Parse failed")
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := apikey.Generate("live"); err != nil {
			b.Fatal(err)
		}
	}
}
