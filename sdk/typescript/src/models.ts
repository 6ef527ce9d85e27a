/**
 * Named types for the API's main objects, so application code can write `Conversation`
 * rather than `components["schemas"]["Conversation"]`. Each is the generated schema type
 * (./schema.d.ts, from openapi/openapi.yaml) under a shorter name: none is written by
 * hand, so they cannot drift from the spec. {@link Schema} names any other schema.
 */
import type { components } from "./schema.js";

type Schemas = components["schemas"];

/** Any schema of the spec by its name: `Schema<"PromptDiff">`. */
export type Schema<Name extends keyof Schemas> = Schemas[Name];

// Identity.
/** The caller: `GET /v1/me`. */
export type Me = Schemas["Me"];
/** An organisation, as listed for its members. */
export type Org = Schemas["Org"];
/** A user's membership of an org, with their role. */
export type OrgMembership = Schemas["OrgMembership"];
/** A member's role in an org: owner, admin or member. */
export type Role = Schemas["Role"];
/** A signed-in device: `GET /v1/me/sessions`. */
export type Session = Schemas["Session"];
/** An org's API key, without its secret. */
export type ApiKey = Schemas["APIKey"];
/** A new or rotated API key with its secret (`key`), shown this once. */
export type ApiKeyWithSecret = Schemas["APIKeyWithSecret"];
/** What an API key may do: `chat`, `rag:read`, `rag:write`, `jobs`, `billing:read`, `admin`. */
export type Scope = Schemas["Scope"];
/** A member of an org. */
export type Member = Schemas["Member"];
/** An invitation to join an org. */
export type Invitation = Schemas["Invitation"];
/** An entry of an org's audit log. */
export type AuditEvent = Schemas["AuditEvent"];
/** An external login linked to the caller's account. */
export type Identity = Schemas["Identity"];

// Chat and models.
/** The body of `POST /v1/chat/completions`; `model` (default "default") and `stream` may be left out. */
export type ChatRequest = Schemas["ChatRequest"];
/** A blocking chat reply: `POST /v1/chat/completions` without `stream`. */
export type ChatCompletion = Schemas["ChatCompletion"];
/** A model alias of `GET /v1/models`, with its targets. */
export type Model = Schemas["ModelAlias"];
/** The org's own key for a provider (only its last characters are ever returned). */
export type ProviderKey = Schemas["ProviderKey"];
/** The org's usage: `GET /v1/usage`. */
export type Usage = Schemas["UsageReport"];
/** One bucket (a day or a model) of {@link Usage}. */
export type UsageBucket = Schemas["UsageBucket"];

// Conversations.
/** A stored conversation. */
export type Conversation = Schemas["Conversation"];
/** A message of a conversation: the user's, a reply, or a tool's result. */
export type Message = Schemas["ConversationMessage"];
/** The body of `POST /v1/conversations/{id}/messages`. */
export type ConversationMessageRequest = Schemas["ConversationMessageRequest"];
/** A blocking conversation reply: the user's message and the reply. */
export type ConversationReply = Schemas["ConversationReply"];
/** An up or down rating of a reply. */
export type MessageFeedback = Schemas["MessageFeedback"];
/** An org's settings (e.g. conversation retention). */
export type OrgSettings = Schemas["OrgSettings"];

// Prompts.
/** A prompt of the prompt store, with its labels. */
export type Prompt = Schemas["Prompt"];
/** One immutable version of a prompt. */
export type PromptVersion = Schemas["PromptVersion"];
/** A label (such as `production`) and the version or split it points to. */
export type PromptLabel = Schemas["PromptLabel"];
/** A prompt rendered with its variables: `POST /v1/prompts/{name}/render`. */
export type RenderedPrompt = Schemas["RenderedPrompt"];

// Jobs and notifications (`Job` is exported with followJob, from ./jobs.ts).
/** Where a job is: queued, running, succeeded, failed or cancelled. */
export type JobState = Schemas["JobState"];
/** An in-app notification. */
export type Notification = Schemas["Notification"];
/** The caller's notification preferences. */
export type NotificationPreferences = Schemas["NotificationPreferences"];

// Service.
/** `GET /health`. */
export type Health = Schemas["Health"];
/** `GET /ready`, with each dependency's check. */
export type Readiness = Schemas["Readiness"];
