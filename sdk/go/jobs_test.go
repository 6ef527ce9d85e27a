package kiln_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// TestE2EJobs follows a real job, the title of a new conversation, to its end through the
// real server.
func TestE2EJobs(t *testing.T) {
	baseURL := startKiln(t)
	ctx := t.Context()
	anonymous, err := kiln.NewClientWithResponses(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	email := fmt.Sprintf("sdk-go-jobs-%d-%s@example.com", time.Now().UnixNano(), strings.ToLower(rand.Text()[:8]))
	signup, err := kiln.CheckResponse(anonymous.SignUpWithResponse(ctx,
		kiln.SignUpRequest{Email: email, Password: "correct horse battery staple 9", Name: "SDK Go jobs"}))
	if err != nil {
		t.Fatal(err)
	}
	keyResp, err := kiln.CheckResponse(anonymous.CreateAPIKeyWithResponse(ctx, nil,
		kiln.CreateAPIKeyRequest{Name: "sdk-go jobs", Scopes: []kiln.Scope{kiln.ScopeChat, kiln.ScopeJobs}}, kiln.WithBearer(signup.JSON201.AccessToken)))
	if err != nil {
		t.Fatal(err)
	}
	key := keyResp.JSON201
	client, err := kiln.NewClientWithResponses(baseURL, kiln.WithRequestEditorFn(kiln.WithBearer(key.Key)))
	if err != nil {
		t.Fatal(err)
	}

	created, err := kiln.CheckResponse(client.CreateConversationWithResponse(ctx, nil, kiln.CreateConversationRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	text := "plan a trip to Lisbon"
	if _, err := kiln.CheckResponse(client.CreateConversationMessageWithResponse(ctx, created.JSON201.Id, nil, kiln.ConversationMessageRequest{Content: &text})); err != nil {
		t.Fatal(err)
	}
	// The reply that ended the first exchange created the title job.
	kind := kiln.JobKind("conversation.title")
	list, err := kiln.CheckResponse(client.ListJobsWithResponse(ctx, &kiln.ListJobsParams{Kind: &kind}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.JSON200.Data) != 1 {
		t.Fatalf("%d title jobs, want 1", len(list.JSON200.Data))
	}
	job := list.JSON200.Data[0]

	var types []string
	end, err := client.FollowJob(ctx, job.Id, nil, func(ev kiln.JobEvent) error {
		types = append(types, ev.Type)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if end.State != kiln.JobSucceeded || end.JobId != job.Id || len(types) == 0 || types[len(types)-1] != kiln.JobEventSucceeded {
		t.Fatalf("end %+v after events %v, want job.succeeded", end, types)
	}
	got, err := kiln.CheckResponse(client.GetJobWithResponse(ctx, job.Id, nil))
	if err != nil || got.JSON200.State != kiln.JobSucceeded {
		t.Fatalf("job after its end: %+v, %v", got, err)
	}
	// Following it again, finished, gives its final event at once.
	if again, err := client.FollowJob(ctx, job.Id, nil, nil); err != nil || again.State != kiln.JobSucceeded {
		t.Fatalf("follow a finished job: %+v, %v", again, err)
	}

	_, err = client.FollowJob(ctx, uuid.New(), nil, nil)
	var problem *kiln.ProblemError
	if !errors.As(err, &problem) || problem.Status != http.StatusNotFound {
		t.Fatalf("follow an unknown job: %v, want a 404 problem", err)
	}
}
