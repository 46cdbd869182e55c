// The dashboard's only door to the scheduler: the public REST API (docs/api.md), with the
// bearer token (kept in sessionStorage) when the scheduler asks for one.

const TOKEN_KEY = "clipsched.token";
const OPERATOR_KEY = "clipsched.operator";

/** An HTTP error with its status and the server's detail message. */
export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function getOperator() {
  return localStorage.getItem(OPERATOR_KEY) ?? "";
}

export function setOperator(name) {
  if (name) localStorage.setItem(OPERATOR_KEY, name);
  else localStorage.removeItem(OPERATOR_KEY);
}

/** The message of an error answer: `{"detail": "..."}` or pydantic's list of errors. */
function detailOf(body, fallback) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => `${(e.loc ?? []).filter((p) => p !== "body").join(".")}: ${e.msg}`)
      .join("; ");
  }
  return fallback;
}

async function request(method, path, { body, headers = {} } = {}) {
  const token = getToken();
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, detailOf(parsed, `${response.status} ${response.statusText}`), parsed);
  }
  return parsed;
}

const enc = encodeURIComponent;

export const api = {
  runs: () => request("GET", "/runs"),
  run: (name) => request("GET", `/runs/${enc(name)}`),
  history: (name, sinceUpdate, limit) =>
    request("GET", `/runs/${enc(name)}/history?since_update=${sinceUpdate}&limit=${limit}`),
  audit: (name, sinceId) => request("GET", `/runs/${enc(name)}/audit?since_id=${sinceId}&limit=1000`),
  /** PUT targets: {target_usage: {...}} or {target_usage_by_group: {...}}, guarded by If-Match. */
  setTargets: (name, body, stateVersion) => {
    const headers = { "If-Match": `"${stateVersion}"` };
    const operator = getOperator();
    // header values must be printable ASCII; anything else is left to the token's name
    if (/^[\x20-\x7e]{1,200}$/.test(operator)) headers["X-Operator"] = operator;
    return request("PUT", `/runs/${enc(name)}/targets`, { body, headers });
  },
};
