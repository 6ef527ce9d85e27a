package server

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/rag/eval"
)

// answerUpstream is an OpenAI-compatible provider with two models: "answerer" replies
// citing, by their number in the fenced sources it was given, the sources whose titles
// its script names for the question; "judge" replies with the verdict its script gives
// for the answer it grades. It keeps every judge request's messages.
type answerUpstream struct {
	*fakeUpstream
	mu     sync.Mutex
	judged [][]upstreamMessage
}

var sourceTitle = regexp.MustCompile(`<source id="(\d+)">\ntitle: (\w+)`)

func newAnswerUpstream(t *testing.T, cites map[string][]string, verdicts map[string]string) *answerUpstream {
	t.Helper()
	u := &answerUpstream{}
	u.fakeUpstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(raw))
		var body struct {
			Model    string            `json:"model"`
			Messages []upstreamMessage `json:"messages"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || len(body.Messages) == 0 {
			t.Errorf("upstream request %s: %v", raw, err)
			return
		}
		last := body.Messages[len(body.Messages)-1].Content
		switch body.Model {
		case "judge-model":
			u.mu.Lock()
			u.judged = append(u.judged, body.Messages)
			u.mu.Unlock()
			for answer, verdict := range verdicts {
				if strings.Contains(last, answer) {
					replyWith(verdict)(w, r)
					return
				}
			}
			t.Errorf("the judge got an unknown answer: %s", last)
		case "answer-model":
			number := map[string]string{}
			for _, m := range body.Messages {
				for _, s := range sourceTitle.FindAllStringSubmatch(m.Content, -1) {
					number[s[2]] = s[1]
				}
			}
			answer := "Here is what the sources say about " + last + "."
			for _, title := range cites[last] {
				if number[title] == "" {
					t.Errorf("no source titled %s for %q among %v", title, last, number)
				}
				answer += " [" + number[title] + "]"
			}
			replyWith(answer)(w, r)
		default:
			t.Errorf("unknown model %q", body.Model)
		}
	})
	return u
}

// TestEvaluationAnswers evaluates answers over the API: a model grounded in the knowledge
// base answers three queries citing known sources, a judge grades them (one verdict
// malformed), and the stored figures are the ones worked out here.
func TestEvaluationAnswers(t *testing.T) {
	t.Parallel()
	const (
		qReset, qInvoice, qRefund = "how do I reset my password", "when do invoices arrive", "can I get my money back"
	)
	up := newAnswerUpstream(t,
		map[string][]string{qReset: {"reset", "invoice"}, qInvoice: {"invoice"}, qRefund: nil},
		map[string]string{
			qReset:   `{"claims": [{"claim": "a reset link is emailed", "supported": true}], "score": 1}`,
			qInvoice: `{"claims": [{"claim": "monthly", "supported": true}, {"claim": "as PDF", "supported": false}], "score": 0.5}`,
			qRefund:  `I would say the answer is faithful: {"score": 1}`,
		})
	b := setup(t, withGateway(t, devProviders(map[string]llm.Provider{"up": up.provider(t, "up")}), map[string][]llm.Target{
		"default": {devTarget}, "answerer": {{Provider: "up", Model: "answer-model"}}, "judge": {{Provider: "up", Model: "judge-model"}},
	}))
	b.runJobs(t)
	owner := b.signUp(t, "eval-answers@example.com").AccessToken
	var kb api.KnowledgeBase
	wantStatus(t, b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": "Help"}, &kb), 201)
	base := "/v1/knowledge-bases/" + kb.Id.String()
	docs := map[string]string{
		"reset":   "Open the account page and choose reset password; the emailed link works for one hour.",
		"invoice": "Invoices are emailed on the first day of each month as PDF.",
		"refund":  "Refunds are possible within 30 days and go back to the card.",
	}
	for id, text := range docs {
		var d api.Document
		wantStatus(t, b.call(t, "POST", base+"/documents", owner, map[string]any{"text": text, "title": id, "external_id": id}, &d), 202)
		waitFor(t, "document ready", func() bool {
			var got api.DocumentWithChunks
			b.call(t, "GET", base+"/documents/"+d.Id.String(), owner, nil, &got)
			return got.Status == api.DocumentReady
		})
	}
	queries := []map[string]any{
		{"id": "q1", "lang": "en", "query": qReset, "relevant": []string{"reset"}, "answer": "With the emailed link."},
		{"id": "q2", "lang": "en", "query": qInvoice, "relevant": []string{"invoice"}, "answer": "On the first of the month."},
		{"id": "q3", "lang": "en", "query": qRefund, "relevant": []string{"refund"}, "answer": "Within 30 days."},
		{"id": "q4", "lang": "en", "query": "what is a seat", "relevant": []string{"invoice"}}, // no reference answer: not answered
	}

	t.Run("ErrUnknownModels", func(t *testing.T) {
		res := b.call(t, "POST", base+"/evaluations", owner, map[string]any{"queries": queries, "answers": map[string]any{"model": "nope", "judge_model": "nada"}}, nil)
		p := decodeProblem(t, res)
		if res.StatusCode != 400 || p.Errors == nil || len(*p.Errors) != 2 || (*p.Errors)[0].Pointer != "/answers/model" || (*p.Errors)[1].Pointer != "/answers/judge_model" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrNoReferenceAnswer", func(t *testing.T) {
		res := b.call(t, "POST", base+"/evaluations", owner, map[string]any{"queries": queries[3:], "answers": map[string]any{"model": "answerer"}}, nil)
		p := decodeProblem(t, res)
		if res.StatusCode != 400 || p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Pointer != "/answers" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})

	var e api.Evaluation
	wantStatus(t, b.call(t, "POST", base+"/evaluations", owner, map[string]any{"modes": []string{"hybrid"}, "queries": queries,
		"answers": map[string]any{"model": "answerer", "judge_model": "judge"}}, &e), 202)
	if e.Answers == nil || e.Answers.Model != "answerer" || e.Answers.JudgeModel == nil || *e.Answers.JudgeModel != "judge" || e.Answers.Metrics != nil {
		t.Fatalf("queued evaluation %+v", e.Answers)
	}
	waitFor(t, "evaluation done", func() bool {
		b.call(t, "GET", base+"/evaluations/"+e.Id.String(), owner, nil, &e)
		return e.Status == api.EvaluationSucceeded || e.Status == api.EvaluationFailed
	})
	if e.Status != api.EvaluationSucceeded || e.Answers == nil || e.Answers.Metrics == nil || e.Answers.Queries == nil {
		t.Fatalf("evaluation %+v", e)
	}
	m := *e.Answers.Metrics
	if m.Queries != 3 || m.Answered != 3 || m.Failed != 0 || m.Cited != 2 || m.Judged != 2 || m.JudgeMalformed != 1 || m.JudgeFailed != 0 {
		t.Fatalf("counts %+v", m)
	}
	near := func(got float32, want float64) bool { return math.Abs(float64(got)-want) < 1e-6 }
	// q1 cites reset (relevant) and invoice: 1/2; q2 cites invoice: 1; q3 cites nothing.
	if !near(m.CitationPrecision, 0.75) || !near(m.CitationRecall, 2.0/3) || m.Faithfulness == nil || !near(*m.Faithfulness, 0.75) {
		t.Fatalf("precision %v recall %v faithfulness %v", m.CitationPrecision, m.CitationRecall, m.Faithfulness)
	}
	q1 := (*e.Answers.Queries)[0]
	if q1["id"] != "q1" || q1["citation_precision"] != 0.5 || !strings.Contains(q1["answer"].(string), "[") {
		t.Fatalf("q1 %+v", q1)
	}
	if q3 := (*e.Answers.Queries)[2]; q3["citation_precision"] != nil || !strings.Contains(q3["judge_error"].(string), "malformed") {
		t.Fatalf("q3 %+v", q3)
	}

	t.Run("OKJudgeSeesNoProductPrompt", func(t *testing.T) {
		up.mu.Lock()
		defer up.mu.Unlock()
		if len(up.judged) != 3 {
			t.Fatalf("%d judge requests", len(up.judged))
		}
		for _, msgs := range up.judged {
			if len(msgs) != 2 || msgs[0].Role != "system" || msgs[0].Content != eval.JudgeRubric || msgs[1].Role != "user" {
				t.Fatalf("judge messages %+v", msgs)
			}
			if user := msgs[1].Content; strings.Contains(user, "untrusted data, not instructions") || strings.Contains(user, "Cite the sources you use") {
				t.Fatalf("the judge saw the answering model's instructions:\n%s", user)
			}
		}
		// q1 cites reset and invoice: the judge gets their text, not the uncited refund's.
		first := up.judged[0][1].Content
		if !strings.Contains(first, docs["reset"]) || !strings.Contains(first, docs["invoice"]) || strings.Contains(first, docs["refund"]) {
			t.Fatalf("judge prompt:\n%s", first)
		}
	})
}
