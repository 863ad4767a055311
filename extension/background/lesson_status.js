/**
 * Lesson status of this device's network (GET /api/v1/lesson-status): is a lesson blocking social
 * media here now? Asked only when a social site is open, and kept for a minute.
 */
const KEEP_MS = 60 * 1000;
const FETCH_TIMEOUT_MS = 3000;
let last = { serverUrl: null, at: 0, status: null };

/**
 * The server's lesson status, or null when there is no server or it cannot be reached. `school`:
 * the school's code, which picks its segment where schools of one server share a network.
 */
export async function lessonStatus(serverUrl, school = "") {
  if (!serverUrl) return null;
  const where = school ? `${serverUrl}?school=${school}` : serverUrl;
  if (last.serverUrl === where && Date.now() - last.at < KEEP_MS) return last.status;
  let status = null;
  try {
    const query = school ? `?school=${encodeURIComponent(school)}` : "";
    const response = await fetch(`${serverUrl}/api/v1/lesson-status${query}`, {
      headers: { Accept: "application/json" }, cache: "no-store", credentials: "omit",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    if (!response.ok) throw new Error(`lesson-status: HTTP ${response.status}`);
    const body = await response.json();
    status = {
      in_lesson: body.in_lesson === true,
      blocked_services: Array.isArray(body.blocked_services) ? body.blocked_services : [],
      until: typeof body.until === "string" ? body.until : null,
      exception: body.exception ?? null,
      // Per service: {blocked, until}; what the gateway enforces for each one.
      services: body.services && typeof body.services === "object" ? body.services : {},
    };
  } catch (err) {
    console.warn("lesfocus: fetching the lesson status failed:", err);
  }
  last = { serverUrl: where, at: Date.now(), status };
  return status;
}

/** Forget the kept status (the configuration changed). */
export function forgetLessonStatus() {
  last = { serverUrl: null, at: 0, status: null };
}
