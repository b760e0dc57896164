// Calls to docent's /v1 API with the API key, and its errors as values the
// page can show. The key lives in sessionStorage: it is forgotten when the
// tab closes.

const KEY_ITEM = 'docent.apiKey';

/** An error answered by the server (or the network), ready to show. */
export class ApiError extends Error {
  constructor(status, type, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }

  /** A sentence for people, saying what to do next. */
  describe() {
    switch (this.status) {
      case 0:
        return `Cannot reach the server (${this.message}). Check that docent is running.`;
      case 401:
        return 'This server needs a valid API key: use the “API key” button to enter one.';
      case 413:
        return `Too large for this server: ${this.message}`;
      case 429: {
        const wait = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : ' Try again shortly.';
        return `The server is busy answering other questions.${wait}`;
      }
      case 503:
        return `The server is not ready: ${this.message}`;
      default:
        return this.message;
    }
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) || '';
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

let askForKey = async () => false;

/**
 * Sets how a key is obtained after a 401: `ask(message)` resolves to true
 * when the user gave a (new) key, false when they cancelled.
 */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

/** Turns a non-2xx response into an ApiError. */
export async function errorFrom(response) {
  let type = 'http';
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      type = body.error.type || type;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  const retry = Number.parseInt(response.headers.get('Retry-After') || '', 10);
  return new ApiError(response.status, type, message, Number.isFinite(retry) ? retry : null);
}

/**
 * fetch() for /v1 routes: adds the key, and on 401 asks for a key and
 * retries (until the user cancels). Resolves to a 2xx Response, else throws
 * an ApiError. `init.body` must be re-sendable (string or FormData).
 */
export async function request(path, init = {}) {
  let message = null;
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = storedKey();
    if (key) headers.set('Authorization', `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...init, headers });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', e.message || String(e));
    }
    if (response.status !== 401) {
      if (!response.ok) throw await errorFrom(response);
      return response;
    }
    message = key ? 'The server refused that key. Enter a valid API key.' : 'This server needs an API key.';
    if (!(await askForKey(message))) throw await errorFrom(response);
  }
}

/** request() for a JSON answer. */
export async function json(path, init = {}) {
  const response = await request(path, init);
  return response.json();
}

/** A JSON POST body. */
export function post(body, init = {}) {
  return {
    ...init,
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(init.headers || {}) },
    body: JSON.stringify(body),
  };
}
