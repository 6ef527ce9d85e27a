// Package kiln is the Go client for the Kiln API, generated from openapi/openapi.yaml.
//
// NewClientWithResponses returns a client with one typed method per operation
// (GetHealthWithResponse, …). Every non-2xx answer is an RFC 9457 problem document;
// CheckResponse turns it into a *ProblemError, whose Code is the stable error code:
//
//	client, err := kiln.NewClientWithResponses("https://api.example.com")
//	...
//	health, err := kiln.CheckResponse(client.GetHealthWithResponse(ctx))
//	var problem *kiln.ProblemError
//	if errors.As(err, &problem) && problem.Code == kiln.Unauthenticated { ... }
//
// API keys and access tokens both go as `Authorization: Bearer …`: WithBearer is the
// request editor for one, and an AuthSession, given as the client's HTTP doer
// (WithHTTPClient), sends a user's access token and refreshes the pair on a 401.
//
// Regenerate client.gen.go with `make generate`; the rest of the package is hand-written.
package kiln
