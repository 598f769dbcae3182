// Requests to the Pinstream API, with the server's errors turned into readable messages.

export class RequestError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "RequestError";
    this.status = status;
    this.code = code;
  }
}

// The server answers errors as {"error": {"code", "message"}}; a proxy in between may answer with HTML,
// so fall back to the status line rather than showing markup.
export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error !== null) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new RequestError(response.status, code, message);
}

export function networkError() {
  return new RequestError(0, "network_error", "The server cannot be reached. Check your connection.");
}

// fetch() that turns a network failure into a RequestError, so callers handle one kind of error.
export async function send(url, options) {
  try {
    return await fetch(url, options);
  } catch {
    throw networkError();
  }
}

// A JSON request; `token` goes in Authorization (no CSRF header needed then, unlike cookie auth).
export async function requestJson(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await send(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}
