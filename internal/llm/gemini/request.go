package gemini

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

// toGenerateRequest maps a unified request to Gemini's: system messages become
// systemInstruction, assistant turns role "model", tool results functionResponse parts
// of a "user" turn, and adjacent turns of one role are merged so the roles alternate.
func (p *Provider) toGenerateRequest(req *llm.Request) (*generateRequest, error) {
	out := &generateRequest{Contents: make([]content, 0, len(req.Messages))}
	for i := range req.Messages {
		m := &req.Messages[i]
		switch m.Role {
		case llm.RoleSystem:
			if out.SystemInstruction == nil {
				out.SystemInstruction = &content{}
			}
			for _, pt := range m.Content {
				if pt.Text != "" {
					out.SystemInstruction.Parts = append(out.SystemInstruction.Parts, part{Text: pt.Text})
				}
			}
		case llm.RoleUser:
			parts, err := p.userParts(m.Content)
			if err != nil {
				return nil, err
			}
			out.appendContent("user", parts)
		case llm.RoleAssistant:
			parts, err := p.assistantParts(m)
			if err != nil {
				return nil, err
			}
			out.appendContent("model", parts)
		case llm.RoleTool:
			fr, err := p.functionResponse(req.Messages, i)
			if err != nil {
				return nil, err
			}
			out.appendContent("user", []part{{FunctionResponse: fr}})
		default:
			return nil, p.invalid("message %d has unknown role %q", i, m.Role)
		}
	}
	if out.SystemInstruction != nil && len(out.SystemInstruction.Parts) == 0 {
		out.SystemInstruction = nil
	}

	if len(req.Tools) > 0 {
		decls := make([]functionDeclaration, len(req.Tools))
		for i, t := range req.Tools {
			decls[i] = functionDeclaration{Name: t.Name, Description: t.Description, ParametersJSONSchema: cleanSchema(t.Parameters)}
		}
		out.Tools = []tool{{FunctionDeclarations: decls}}
		if tc := req.ToolChoice; tc != nil {
			cfg := &toolConfig{}
			switch tc.Mode {
			case llm.ToolChoiceAuto, "":
				cfg.FunctionCallingConfig.Mode = "AUTO"
			case llm.ToolChoiceNone:
				cfg.FunctionCallingConfig.Mode = "NONE"
			case llm.ToolChoiceRequired:
				cfg.FunctionCallingConfig.Mode = "ANY"
			case llm.ToolChoiceTool:
				cfg.FunctionCallingConfig.Mode = "ANY"
				cfg.FunctionCallingConfig.AllowedFunctionNames = []string{tc.Name}
			default:
				return nil, p.invalid("unknown tool choice %q", tc.Mode)
			}
			out.ToolConfig = cfg
		}
	}

	gc := &generationConfig{
		CandidateCount:  1, // Kiln's reply is one message
		Temperature:     req.Temperature,
		TopP:            req.TopP,
		MaxOutputTokens: req.MaxTokens,
		StopSequences:   req.Stop,
		Seed:            req.Seed,
	}
	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case "json_object":
			gc.ResponseMimeType = "application/json"
		case "json_schema":
			gc.ResponseMimeType = "application/json"
			gc.ResponseJSONSchema = cleanSchema(rf.Schema)
		}
	}
	out.GenerationConfig = gc
	return out, nil
}

// appendContent adds parts as a turn of role, joining them to the previous turn when it
// has the same role (tool results followed by a user remark, say). Turns without parts
// are dropped: Gemini rejects empty contents.
func (r *generateRequest) appendContent(role string, parts []part) {
	if len(parts) == 0 {
		return
	}
	if n := len(r.Contents); n > 0 && r.Contents[n-1].Role == role {
		r.Contents[n-1].Parts = append(r.Contents[n-1].Parts, parts...)
		return
	}
	r.Contents = append(r.Contents, content{Role: role, Parts: parts})
}

func (p *Provider) userParts(in []llm.Part) ([]part, error) {
	parts := make([]part, 0, len(in))
	for i := range in {
		pt := &in[i]
		switch pt.Type {
		case llm.PartText, "":
			if pt.Text != "" {
				parts = append(parts, part{Text: pt.Text})
			}
		case llm.PartImage:
			img, err := p.imagePart(pt.Image)
			if err != nil {
				return nil, err
			}
			parts = append(parts, img)
		default:
			return nil, p.invalid("unknown content part type %q", pt.Type)
		}
	}
	return parts, nil
}

func (p *Provider) imagePart(img *llm.Image) (part, error) {
	switch {
	case img == nil:
		return part{}, p.invalid("image part without an image")
	case len(img.Data) > 0:
		mt := img.MediaType
		if mt == "" {
			mt = http.DetectContentType(img.Data)
			if !strings.HasPrefix(mt, "image/") {
				mt = "image/jpeg"
			}
		}
		return part{InlineData: &blob{MimeType: mt, Data: base64.StdEncoding.EncodeToString(img.Data)}}, nil
	case strings.HasPrefix(img.URL, "data:"):
		// A data: URL (what OpenAI-style clients send for uploads) is inline bytes already
		// in base64: pass the payload through without decoding it.
		meta, data, ok := strings.Cut(img.URL[len("data:"):], ",")
		mt, isBase64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isBase64 || data == "" {
			return part{}, p.invalid("image data URL is not base64")
		}
		if mt == "" {
			mt = "image/jpeg"
		}
		return part{InlineData: &blob{MimeType: mt, Data: data}}, nil
	case img.URL != "":
		return part{FileData: &fileData{MimeType: imageTypeOf(img.URL), FileURI: img.URL}}, nil
	default:
		return part{}, p.invalid("image part has neither a URL nor data")
	}
}

// imageTypeOf guesses an image URL's media type from its extension: fileData needs one
// and Gemini does not sniff it.
func imageTypeOf(url string) string {
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		url = url[:i]
	}
	switch strings.ToLower(path.Ext(url)) {
	case ".png":
		return "image/png"
	case ".webp":
		return "image/webp"
	case ".gif":
		return "image/gif"
	case ".heic":
		return "image/heic"
	case ".heif":
		return "image/heif"
	default:
		return "image/jpeg"
	}
}

func (p *Provider) assistantParts(m *llm.Message) ([]part, error) {
	parts := make([]part, 0, len(m.Content)+len(m.ToolCalls))
	for _, pt := range m.Content {
		if pt.Text != "" {
			parts = append(parts, part{Text: pt.Text})
		}
	}
	first, signed := -1, false
	for _, tc := range m.ToolCalls {
		args := json.RawMessage(strings.TrimSpace(tc.Arguments))
		if len(args) == 0 || string(args) == "null" {
			args = json.RawMessage("{}")
		} else if args[0] != '{' || !json.Valid(args) {
			return nil, p.invalid("arguments of tool call %q are not a JSON object", tc.Name)
		}
		sig := signatureOf(tc.ID)
		signed = signed || sig != ""
		if first < 0 {
			first = len(parts)
		}
		parts = append(parts, part{FunctionCall: &functionCall{Name: tc.Name, Args: args}, ThoughtSignature: sig})
	}
	// Gemini signs only the first call of a parallel batch; one with no signature at all
	// (history from another model, or a client that rewrote the ids) gets the documented
	// bypass so that Gemini 3 does not refuse the whole request.
	if first >= 0 && !signed {
		parts[first].ThoughtSignature = skipSignature
	}
	return parts, nil
}

// functionResponse maps the tool message at index i. Gemini matches results by function
// name, so a message without Name takes it from the call it answers.
func (p *Provider) functionResponse(msgs []llm.Message, i int) (*functionResponse, error) {
	m := &msgs[i]
	name := m.Name
	for j := i - 1; name == "" && j >= 0; j-- {
		if msgs[j].Role != llm.RoleAssistant {
			continue
		}
		for _, tc := range msgs[j].ToolCalls {
			if tc.ID == m.ToolCallID {
				name = tc.Name
				break
			}
		}
	}
	if name == "" {
		return nil, p.invalid("tool message %d answers no known function call (set its name or tool call id)", i)
	}
	return &functionResponse{Name: name, Response: resultObject(m.Text())}, nil
}

// resultObject makes a tool result the JSON object functionResponse.response must be:
// an object is sent as is, any other JSON value or plain text as {"result": …}.
func resultObject(text string) json.RawMessage {
	trimmed := strings.TrimSpace(text)
	if trimmed != "" && json.Valid([]byte(trimmed)) {
		if trimmed[0] == '{' {
			return json.RawMessage(trimmed)
		}
		return json.RawMessage(`{"result":` + trimmed + `}`)
	}
	b, _ := json.Marshal(struct {
		Result string `json:"result"`
	}{text})
	return b
}

// cleanSchema drops the root "$schema" keyword: generators add it, it describes the
// schema rather than the arguments, and Gemini has answered 400 to it in tool schemas.
// The rest passes unchanged.
func cleanSchema(schema json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(schema); len(t) == 0 || string(t) == "null" {
		return nil // no parameters: leave the field out
	}
	if !bytes.Contains(schema, []byte(`"$schema"`)) {
		return schema
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(schema, &m); err != nil {
		return schema
	}
	if _, ok := m["$schema"]; !ok {
		return schema
	}
	delete(m, "$schema")
	b, err := json.Marshal(m)
	if err != nil {
		return schema
	}
	return b
}

func (p *Provider) invalid(format string, args ...any) *llm.Error {
	e := llm.ProtocolError(p.name, format, args...)
	e.Kind = llm.KindInvalid
	return e
}
