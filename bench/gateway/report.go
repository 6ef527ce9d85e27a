package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// The targets of issue 10, on a 2-core machine.
const (
	targetAddedP50    = 600 * time.Microsecond // at c=10
	targetAddedTTFT   = 250 * time.Microsecond
	targetPeakShare   = 0.35
	targetCPU         = 100 * time.Microsecond // Kiln CPU per blocking request, at c=10
	targetPeakRSS     = 45e6                   // bytes
	targetConcurrency = 10
)

// report is everything one run measured.
type report struct {
	cfg         config
	date        time.Time
	kilnVersion string
	nonStream   []map[string]*result // one per cfg.concurrency, by target name
	stream      map[string]*result   // by target name
	peakRSS     int64                // Kiln's VmHWM in bytes; 0 with -direct-only
	usageSent   int64                // calls made through Kiln, preflight included
	usageStored int64                // calls in Kiln's usage report at the end
}

func (rep *report) hasKiln() bool { return !rep.cfg.directOnly }

// correct reports whether no request failed and every frame the mock sent was read.
func (rep *report) correct() bool {
	ok := true
	for _, row := range append(rep.nonStream, rep.stream) {
		for _, r := range row {
			ok = ok && r.errors == 0
		}
	}
	for _, r := range rep.stream {
		ok = ok && r.framesRecv == r.sent.Frames
	}
	return ok
}

// peak returns the highest req/s of a target's non-streaming runs, and its concurrency.
func (rep *report) peak(name string) (float64, int) {
	best, at := 0.0, 0
	for _, row := range rep.nonStream {
		if r := row[name]; r != nil && r.perSecond() > best {
			best, at = r.perSecond(), r.concurrency
		}
	}
	return best, at
}

func (rep *report) markdown() string {
	var b strings.Builder
	cfg := rep.cfg
	fmt.Fprintf(&b, "## Kiln gateway benchmark\n\n")
	fmt.Fprintf(&b, "`go run ./bench/gateway %s` on %s, %s/%s, %d CPUs, %s",
		strings.Join(rep.cfg.args, " "), rep.date.UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if rep.hasKiln() {
		fmt.Fprintf(&b, ", %s", rep.kilnVersion)
	}
	fmt.Fprintf(&b, ".\nMock: %s before the first byte, %d content frames, %s before each. "+
		"Each run: %s warm-up, then %s measured; direct and Kiln back to back.\n\n",
		cfg.latency, cfg.frames, cfg.frameInterval, cfg.warmup, cfg.duration)

	b.WriteString("| scenario | direct | kiln | ratio / added |\n| --- | ---: | ---: | ---: |\n")
	row := func(name, direct, kiln, ratio string) {
		if !rep.hasKiln() {
			kiln, ratio = "—", "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, direct, kiln, ratio)
	}
	for _, res := range rep.nonStream {
		d, k := res["direct"], res["kiln"]
		c := fmt.Sprintf("c=%d", d.concurrency)
		for _, p := range []float64{50, 99} {
			dp := percentile(d.latencies, p)
			if k == nil {
				row(fmt.Sprintf("%s p%.0f", c, p), ms(dp), "", "")
				continue
			}
			kp := percentile(k.latencies, p)
			row(fmt.Sprintf("%s p%.0f", c, p), ms(dp), ms(kp), added(kp-dp))
		}
		if k == nil {
			row(c+" req/s", perSec(d.perSecond()), "", "")
			continue
		}
		row(c+" req/s", perSec(d.perSecond()), perSec(k.perSecond()), percent(k.perSecond(), d.perSecond()))
		row(c+" Kiln CPU per request", "—", ms(k.cpuPerRequest()), "")
	}
	dPeak, dAt := rep.peak("direct")
	kPeak, kAt := rep.peak("kiln")
	row("peak req/s", fmt.Sprintf("%s (c=%d)", perSec(dPeak), dAt), fmt.Sprintf("%s (c=%d)", perSec(kPeak), kAt), percent(kPeak, dPeak))

	sd, sk := rep.stream["direct"], rep.stream["kiln"]
	sc := fmt.Sprintf("stream c=%d", cfg.streamConcurrency)
	dTTFT := percentile(sd.ttfts, 50)
	var kTTFT time.Duration
	if sk != nil {
		kTTFT = percentile(sk.ttfts, 50)
	}
	row(sc+" TTFT p50", ms(dTTFT), ms(kTTFT), fmt.Sprintf("%.2f× (%s)", ratio(kTTFT, dTTFT), added(kTTFT-dTTFT)))
	if sk == nil {
		sk = &result{} // the kiln column is not printed
	}
	row(sc+" completed streams/s", perSec(sd.perSecond()), perSec(sk.perSecond()), percent(sk.perSecond(), sd.perSecond()))
	row(sc+" frames received / sent", frames(sd), frames(sk), "")
	row("failed requests", fmt.Sprint(rep.failed("direct")), fmt.Sprint(rep.failed("kiln")), "")
	if sk.cpu > 0 {
		row(sc+" Kiln CPU per stream", "—", ms(sk.cpuPerRequest()), "")
	}
	row("kiln peak RSS (VmHWM)", "—", mb(rep.peakRSS), "")
	row("usage records stored / calls", "—", fmt.Sprintf("%d / %d", rep.usageStored, rep.usageSent), "")

	b.WriteString("\n")
	for _, line := range rep.verdicts() {
		b.WriteString(line + "\n")
	}
	return b.String()
}

// verdicts returns one PASS, MISS or SKIP line per target and per correctness check.
func (rep *report) verdicts() []string {
	var lines []string
	add := func(ok bool, what, got string) {
		verdict := "MISS"
		if ok {
			verdict = "PASS"
		}
		lines = append(lines, fmt.Sprintf("%s  %s: %s", verdict, what, got))
	}
	skip := func(what, why string) { lines = append(lines, fmt.Sprintf("SKIP  %s: %s", what, why)) }

	sd, sk := rep.stream["direct"], rep.stream["kiln"]
	add(sd.framesRecv == sd.sent.Frames, "frames received = frames sent (direct)", frames(sd))
	if rep.hasKiln() {
		add(sk.framesRecv == sk.sent.Frames, "frames received = frames sent (kiln)", frames(sk))
	}
	failed := rep.failed("direct") + rep.failed("kiln")
	add(failed == 0, "no failed request", fmt.Sprint(failed))

	const (
		addedP50 = "added p50 at c=10 ≤ 0.6 ms"
		cpu      = "Kiln CPU per blocking request at c=10 ≤ 0.1 ms"
		ttft     = "TTFT p50 added by Kiln ≤ 0.25 ms"
		peak     = "peak req/s through Kiln ≥ 35 % of direct"
		rss      = "Kiln peak RSS ≤ 45 MB"
		usage    = "every call's usage record stored"
	)
	if !rep.hasKiln() {
		for _, what := range []string{addedP50, cpu, ttft, peak, rss, usage} {
			skip(what, "-direct-only")
		}
		return lines
	}
	if res := rep.at(targetConcurrency); res == nil {
		skip(addedP50, "no c=10 run in -concurrency")
		skip(cpu, "no c=10 run in -concurrency")
	} else {
		d := percentile(res["kiln"].latencies, 50) - percentile(res["direct"].latencies, 50)
		add(d <= targetAddedP50, addedP50, added(d))
		perReq := res["kiln"].cpuPerRequest()
		add(perReq > 0 && perReq <= targetCPU, cpu, ms(perReq))
	}
	d := percentile(sk.ttfts, 50) - percentile(sd.ttfts, 50)
	add(d <= targetAddedTTFT, ttft, added(d))
	dPeak, _ := rep.peak("direct")
	kPeak, _ := rep.peak("kiln")
	add(dPeak > 0 && kPeak/dPeak >= targetPeakShare, peak, percent(kPeak, dPeak))
	add(rep.peakRSS <= targetPeakRSS, rss, mb(rep.peakRSS))
	add(rep.usageStored == rep.usageSent, usage, fmt.Sprintf("%d of %d", rep.usageStored, rep.usageSent))
	return lines
}

// at returns the non-streaming results at concurrency c, or nil.
func (rep *report) at(c int) map[string]*result {
	for _, row := range rep.nonStream {
		if row["direct"].concurrency == c {
			return row
		}
	}
	return nil
}

// failed counts a target's failed requests over every run.
func (rep *report) failed(name string) int64 {
	var n int64
	for _, row := range append(rep.nonStream, rep.stream) {
		if r := row[name]; r != nil {
			n += r.errors
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func added(d time.Duration) string {
	return fmt.Sprintf("%+.3f ms", float64(d)/float64(time.Millisecond))
}

func perSec(v float64) string { return fmt.Sprintf("%.0f", v) }

func mb(bytes int64) string { return fmt.Sprintf("%.1f MB", float64(bytes)/1e6) }

func frames(r *result) string { return fmt.Sprintf("%d / %d", r.framesRecv, r.sent.Frames) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func percent(a, b float64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f %%", 100*a/b)
}
