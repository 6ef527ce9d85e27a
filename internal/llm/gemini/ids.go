package gemini

import (
	"strconv"
	"strings"
)

// Gemini 3 attaches a thoughtSignature to the function calls it makes and answers 400
// when a later request replays those calls without it. Kiln's unified messages carry only
// a call's id, name and arguments, and OpenAI-style clients echo only those, so the
// signature travels inside the call id: "<id>__thought__<signature>", the convention
// other gateways (LiteLLM) use, which clients return verbatim in the assistant message
// and in the tool message that answers it.
const signatureSeparator = "__thought__"

// skipSignature is the value Google documents for function calls whose signature is
// unknown (history written by another model or a client that dropped it): it tells the
// validator to let the call through.
const skipSignature = "skip_thought_signature_validator"

// callID is the id Kiln reports for the index-th function call of a reply: Gemini's own
// id when it sent one, else a stable call_<index>, with the signature appended.
func callID(id string, index int, signature string) string {
	if id == "" {
		id = "call_" + strconv.Itoa(index)
	}
	if signature == "" {
		return id
	}
	return id + signatureSeparator + signature
}

// signatureOf returns the thought signature carried in a call id, if any.
func signatureOf(id string) string {
	_, sig, _ := strings.Cut(id, signatureSeparator)
	return sig
}
