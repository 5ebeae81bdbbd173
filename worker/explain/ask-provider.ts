/**
 * One call to an OpenAI-compatible chat completions endpoint, turned into a
 * validated explanation or into a 502 that says what went wrong in words a
 * user can act on: never the provider's raw text, never the key.
 */
import OpenAI, { APIError } from "openai";
import { failureExplanation, type FailureExplanation } from "../../schema/api";
import { ApiError, ErrorCode } from "../errors";
import type { ChatMessage } from "./prompt";

export type ProviderCall = {
  providerId: string;
  baseURL: string;
  apiKey: string;
  model: string;
  messages: ChatMessage[];
  /** The whole call, answer body included, ends within this. */
  timeoutMs: number;
};

/** Asks the provider's model; resolves only with a schema-valid explanation. */
export async function askProvider(call: ProviderCall): Promise<FailureExplanation> {
  const client = new OpenAI({
    baseURL: call.baseURL,
    apiKey: call.apiKey,
    timeout: call.timeoutMs,
    // The caller is waiting on an HTTP request; a retry would double its wait.
    maxRetries: 0,
  });
  // The client's own timeout stops once the headers arrive; this signal
  // also bounds a provider that then sends its body slowly.
  const deadline = AbortSignal.timeout(call.timeoutMs);

  let content: string | null | undefined;
  try {
    const completion = await client.chat.completions.create(
      {
        model: call.model,
        messages: call.messages,
        // json_object rather than json_schema: far more OpenAI-compatible
        // servers (Ollama, Groq, OpenRouter, Workers AI) support it.
        response_format: { type: "json_object" },
      },
      { signal: deadline },
    );
    content = completion.choices?.[0]?.message?.content;
  } catch (error) {
    throw callFailure(call, error, deadline.aborted);
  }
  return parseExplanation(call.providerId, content);
}

function callFailure(call: ProviderCall, error: unknown, timedOut: boolean): ApiError {
  const name = `AI provider "${call.providerId}"`;
  console.warn(
    `explain:askProvider ${call.providerId}`,
    error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  );
  if (timedOut) {
    return upstream(`${name} did not answer within ${call.timeoutMs / 1000} s`);
  }
  if (error instanceof APIError && error.status !== undefined) {
    return upstream(statusMessage(name, error.status, call));
  }
  if (error instanceof APIError) {
    return upstream(`${name} could not be reached at its base URL`);
  }
  // The SDK could not read the answer as a chat completion at all.
  return upstream(`${name} answered with something that is not a chat completion`);
}

function statusMessage(name: string, status: number, call: ProviderCall): string {
  const fix = `PUT /api/ai/providers/${call.providerId}`;
  switch (status) {
    case 401:
    case 403:
      return `${name} refused the API key (HTTP ${status}); replace it with ${fix}`;
    case 404:
      return `${name} answered HTTP 404: check its base URL and the model "${call.model}"`;
    case 429:
      return `${name} is rate limiting or out of quota (HTTP 429); try again later`;
    case 400:
    case 422:
      return (
        `${name} rejected the request (HTTP ${status}); the model "${call.model}" ` +
        "may not exist or may not support JSON output"
      );
    default:
      return `${name} failed with HTTP ${status}`;
  }
}

/** Reads the model's answer: a JSON object, possibly fenced as a code block. */
export function parseExplanation(
  providerId: string,
  content: string | null | undefined,
): FailureExplanation {
  const name = `AI provider "${providerId}"`;
  if (!content?.trim()) throw upstream(`${name} answered with no explanation`);

  const fenced = content.trim().match(/^```(?:json)?\s*([\s\S]*?)\s*```$/i);
  let json: unknown;
  try {
    json = JSON.parse(fenced ? fenced[1] : content);
  } catch {
    throw upstream(`${name} answered with text that is not JSON`);
  }
  const result = failureExplanation.safeParse(json);
  if (!result.success) {
    const fields = [
      ...new Set(
        result.error.issues.map((i) => i.path.map(String).join(".") || "(root)"),
      ),
    ];
    throw upstream(
      `${name} answered JSON that is not an explanation (invalid: ${fields.join(", ")})`,
    );
  }
  return result.data;
}

const upstream = (message: string) =>
  new ApiError(502, ErrorCode.upstreamFailed, message);
