// The offer/answer exchange shared by the studio (publish) and the player (watch), over the live-room socket.
// (WHIP and WHEP over HTTP are for encoders and players we did not write.)

import { requestJson } from "./net.js";

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

// Our offer over the live-room socket (a LiveSocket): `event` is "publish", "subscribe" or "renegotiate" as
// docs/events.md describes them, `payload` its other fields. Resolves with the ack ({session_id, sdp, codecs}) once the answer is applied.
export async function exchangeOverSocket(pc, socket, event, payload) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  let ack;
  try {
    ack = await socket.call(event, { ...payload, sdp: pc.localDescription.sdp });
  } catch (error) {
    // A refused renegotiation leaves the server's side as it was: so must ours be.
    if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
    throw error;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
  return ack;
}
