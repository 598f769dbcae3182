// The WHIP/WHEP offer/answer exchange shared by the studio (publish) and the player (watch).

import { errorFrom, requestJson, send } from "./net.js";

// The server takes no trickled candidates: they must be in the offer. Gathering normally completes in
// milliseconds on a LAN, but an unreachable STUN server can hold it for many seconds while the host
// candidates are already in hand, so stop waiting after a short while.
const ICE_GATHERING_TIMEOUT_MS = 2000;

export function iceGatheringDone(pc, timeoutMs = ICE_GATHERING_TIMEOUT_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// STUN and TURN servers from the server, TURN with credentials that expire: they must be known before the
// peer connection gathers candidates (a relay-only network has no others), so they cannot wait for the WHIP or
// WHEP answer. Reused while they stay valid for a good while, so a page retrying every few seconds asks rarely.
const ICE_REUSE_MARGIN_MS = 5 * 60 * 1000;
const ICE_REFRESH_WITHOUT_TURN_MS = 10 * 60 * 1000;
let iceCache = null;

export async function iceServers() {
  if (iceCache && iceCache.validUntil - Date.now() > ICE_REUSE_MARGIN_MS) return iceCache.servers;
  try {
    const body = await requestJson("/api/ice-servers");
    const validUntil = body.expires_at ?? Date.now() + ICE_REUSE_MARGIN_MS + ICE_REFRESH_WITHOUT_TURN_MS;
    iceCache = { servers: body.iceServers, validUntil };
    return body.iceServers;
  } catch {
    // Without them a direct connection still works wherever the network allows one.
    return [];
  }
}

export async function newPeerConnection() {
  const servers = await iceServers();
  try {
    return new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: servers });
  } catch {
    // A server URL this browser cannot parse must not stop a connection that may not need it.
    return new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  }
}

// POST our offer, apply the answer, and return the session's absolute URL (DELETE it to end the session).
// Throws RequestError with the server's code (e.g. "not_live") and message.
export async function exchangeSdp(pc, endpoint, { token } = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const url = new URL(endpoint, window.location.href);
  const response = await send(url, { method: "POST", headers, body: pc.localDescription.sdp });
  if (response.status !== 201) throw await errorFrom(response);
  const location = response.headers.get("Location");
  if (!location) throw new Error("The server did not name the session (no Location header).");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  return new URL(location, url).href;
}

// End a session; a session the server already ended (404) is not an error. `keepalive` lets the request
// outlive the page when it is sent while the page unloads.
export async function endSession(sessionUrl, { token, keepalive = false } = {}) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await send(sessionUrl, { method: "DELETE", headers, keepalive });
  if (!response.ok && response.status !== 404) throw await errorFrom(response);
}
