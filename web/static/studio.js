// The host's studio: sign in, pick a room, preview camera and microphone, go live and share a screen over the
// live-room socket (the stream key and WHIP URL are for encoders such as OBS).

import { LiveSocket } from "./live_socket.js";
import { RequestError, requestJson } from "./net.js";
import { exchangeOverSocket, newPeerConnection } from "./webrtc.js";

const $ = (id) => document.getElementById(id);
const ROOM_KEY = "pinstream.studio.room";
// The server's rule for room names (rooms/service.py): they are URL segments and event topics.
const SLUG = /^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$/;
// Refresh the access token this long before it expires, so no request carries one that expires in flight.
const REFRESH_MARGIN_MS = 60_000;

const auth = { token: null, expiresAt: 0, user: null, refreshing: null };
const studio = {
  room: null, stream: null, pc: null, session: null, phase: "idle", socket: null, socketExpiresAt: 0, screen: null,
};
// Tells the show controls (studio_overlay.js) when the phase changes: they run while the host is live.
export const studioEvents = new EventTarget();

// --- signing in -----------------------------------------------------------------------------------------

function adopt(tokens) {
  auth.token = tokens.access_token;
  auth.expiresAt = tokens.access_expires_at;
  auth.user = tokens.user;
}

// The access token lives in memory only; the HttpOnly refresh cookie renews it (and resumes a session
// after a reload). One refresh at a time: the refresh token rotates, so parallel refreshes would race.
export async function accessToken() {
  if (auth.token && auth.expiresAt - Date.now() > REFRESH_MARGIN_MS) return auth.token;
  auth.refreshing ??= requestJson("/api/auth/refresh", { method: "POST", body: {} })
    .then(adopt)
    .finally(() => {
      auth.refreshing = null;
    });
  try {
    await auth.refreshing;
  } catch (error) {
    if (error instanceof RequestError && error.status === 401) signedOut("Your session ended. Sign in again.");
    throw error;
  }
  return auth.token;
}

// An API call as the signed-in host. A 401 despite a fresh-looking token (revoked, or the server's key
// changed) gets one retry with a refreshed token.
async function api(path, options = {}) {
  try {
    return await requestJson(path, { ...options, token: await accessToken() });
  } catch (error) {
    if (!(error instanceof RequestError) || error.status !== 401 || !auth.token) throw error;
    auth.expiresAt = 0;
    return requestJson(path, { ...options, token: await accessToken() });
  }
}

function show(section) {
  for (const id of ["loading", "sign-in", "not-host", "studio"]) $(id).hidden = id !== section;
}

function signedOut(message = "") {
  auth.token = null;
  auth.user = null;
  $("account").textContent = "";
  $("sign-out").hidden = true;
  $("sign-in-error").textContent = message;
  // Signed out mid-show (the session expired): the server notices the dropped connection and ends the show.
  if (studio.pc) {
    closePeer();
    setPhase("ended", "The show has ended.");
  }
  stopCamera();
  studio.socket?.close();
  studio.socket = null;
  show("sign-in");
}

// The token the socket connects with; the server checks it when the host publishes, so `liveSocket` makes
// sure the socket's token is still good before going live.
async function socketToken() {
  try {
    const token = await accessToken();
    studio.socketExpiresAt = auth.expiresAt;
    return token;
  } catch {
    return null;
  }
}

async function liveSocket() {
  const socket = studio.socket;
  if (socket.connected && studio.socketExpiresAt - Date.now() > REFRESH_MARGIN_MS) return socket;
  socket.close(); // Nothing is published on it yet: reconnecting costs nothing.
  await socket.connect();
  return socket;
}

function signedIn() {
  if (!studio.socket) {
    studio.socket = new LiveSocket({ token: socketToken });
    studio.socket.connect().catch(() => {}); // Going live reconnects if this failed.
  }
  $("account").textContent = auth.user.display_name || auth.user.email;
  $("sign-out").hidden = false;
  if (auth.user.role !== "host" && auth.user.role !== "admin") {
    show("not-host");
    return;
  }
  show("studio");
  const saved = localStorage.getItem(ROOM_KEY);
  $("room").value = saved || roomFromEmail(auth.user.email);
  startCamera();
  // A room used before is taken up again; a new host confirms the suggested name first.
  if (saved) chooseRoom();
}

// A first room name for a new host: the address's local part, made into a valid slug.
function roomFromEmail(email) {
  const base = email.split("@")[0].toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return base.length >= 3 ? base.slice(0, 64).replace(/-+$/, "") : `${base || "my"}-room`;
}

async function signIn(event) {
  event.preventDefault();
  const button = $("sign-in-button");
  button.disabled = true;
  $("sign-in-error").textContent = "";
  try {
    adopt(await requestJson("/api/auth/login", {
      method: "POST",
      body: { email: $("email").value.trim(), password: $("password").value },
    }));
    $("password").value = "";
    signedIn();
  } catch (error) {
    $("sign-in-error").textContent = error.status === 401 ? "Wrong email or password." : error.message;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  if (studio.session) await endShow();
  try {
    await requestJson("/api/auth/logout", { method: "POST", body: {} });
  } catch {
    // Signed out locally either way; the refresh token expires on its own.
  }
  signedOut();
}

// --- room -----------------------------------------------------------------------------------------------

function mayPublish(room) {
  const me = auth.user;
  return me.role === "admin" || room.owner_id === me.id || room.cohost_ids.includes(me.id);
}

async function chooseRoom(event) {
  event?.preventDefault();
  const slug = $("room").value.trim().toLowerCase();
  const status = $("room-status");
  if (!SLUG.test(slug)) {
    status.textContent = "Use 3 to 64 lower-case letters, digits and hyphens, not starting or ending with a hyphen.";
    return;
  }
  $("room-button").disabled = true;
  status.textContent = "Checking…";
  try {
    let room;
    try {
      room = await requestJson(`/api/rooms/${encodeURIComponent(slug)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      const title = `${auth.user.display_name || slug}'s room`.slice(0, 200);
      room = await api("/api/rooms", { method: "POST", body: { slug, title } });
    }
    if (!mayPublish(room)) {
      status.textContent = "This room belongs to another host. Choose another name.";
      return;
    }
    useRoom(room);
  } catch (error) {
    status.textContent = error.message;
  } finally {
    $("room-button").disabled = false;
  }
}

function useRoom(room) {
  studio.room = room.slug;
  localStorage.setItem(ROOM_KEY, room.slug);
  $("room-status").textContent = `Room "${room.title}" is ready.`;
  $("whip-url").value = `${window.location.origin}/whip/${room.slug}`;
  const watch = $("watch-link");
  watch.href = `/live/${encodeURIComponent(room.slug)}`;
  watch.textContent = `Viewer page: ${window.location.origin}/live/${room.slug}`;
  watch.hidden = false;
  updateControls();
}

// --- camera ---------------------------------------------------------------------------------------------

const CAMERA_ERRORS = {
  NotAllowedError: "Camera and microphone access is blocked. Allow it in the browser's site settings.",
  NotFoundError: "No camera or microphone was found.",
  NotReadableError: "The camera or microphone is in use by another application.",
  OverconstrainedError: "The camera cannot deliver a usable picture size.",
};

async function startCamera() {
  if (studio.stream) return;
  $("camera-retry").hidden = true;
  $("camera-status").textContent = "Starting camera and microphone…";
  try {
    studio.stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    });
    $("preview").srcObject = studio.stream;
    $("camera-status").textContent = "";
  } catch (error) {
    $("camera-status").textContent = CAMERA_ERRORS[error.name] || `The camera could not start: ${error.message}`;
    $("camera-retry").hidden = false;
  }
  updateControls();
}

function stopCamera() {
  if (!studio.stream) return;
  for (const track of studio.stream.getTracks()) track.stop();
  studio.stream = null;
  $("preview").srcObject = null;
}

// --- going live -----------------------------------------------------------------------------------------

function setPhase(phase, message) {
  studio.phase = phase;
  const status = $("status");
  status.dataset.state = phase;
  status.textContent = message;
  $("on-air").hidden = phase !== "live";
  updateControls();
  studioEvents.dispatchEvent(new CustomEvent("phase", { detail: { phase, room: studio.room, socket: studio.socket } }));
}

function updateControls() {
  const busy = studio.phase === "connecting" || studio.phase === "live";
  $("go-live").hidden = busy;
  $("go-live").disabled = !studio.room || !studio.stream;
  $("end-show").hidden = !busy;
  const sharing = Boolean(studio.screen?.track);
  $("share-screen").hidden = studio.phase !== "live" || sharing || !navigator.mediaDevices?.getDisplayMedia;
  $("share-screen").disabled = false;
  $("stop-screen").hidden = studio.phase !== "live" || !sharing;
  $("room-button").disabled = busy;
  $("room").disabled = busy;
}

// H.264 first: the server forwards the publisher's codec to every viewer unchanged, and H.264 is what phones
// decode in hardware. Constrained baseline (42e01f) in packetization mode 1 is what every WebRTC H.264
// decoder takes; the other codecs stay listed after it as a fallback.
function preferH264(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const rank = (codec) => {
    const fmtp = codec.sdpFmtpLine || "";
    if (codec.mimeType.toLowerCase() !== "video/h264" || !/packetization-mode=1/.test(fmtp)) return 2;
    return /profile-level-id=42e01f/i.test(fmtp) ? 0 : 1;
  };
  // Browsers have disagreed on whether the list must come from the receiver's or the sender's capabilities.
  for (const source of [window.RTCRtpReceiver, window.RTCRtpSender]) {
    const codecs = source?.getCapabilities?.("video")?.codecs;
    if (!codecs || !codecs.some((codec) => rank(codec) < 2)) continue;
    try {
      transceiver.setCodecPreferences([...codecs].sort((a, b) => rank(a) - rank(b)));
      return;
    } catch {
      // Refused by this browser: try the other list, else keep its default order.
    }
  }
}

async function goLive() {
  if (!studio.room || !studio.stream) return;
  setPhase("connecting", "Connecting…");
  const pc = await newPeerConnection();
  if (studio.phase !== "connecting") {
    pc.close(); // Something else happened while fetching the ICE servers.
    return;
  }
  studio.pc = pc;
  for (const track of studio.stream.getTracks()) {
    const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [studio.stream] });
    if (track.kind === "video") preferH264(transceiver);
  }
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  try {
    // The socket connected with the signed-in host's access token: that stands in for the stream key.
    const ack = await exchangeOverSocket(pc, await liveSocket(), "publish", { room: studio.room });
    if (studio.pc !== pc) {
      studio.socket.call("unpublish", { session_id: ack.session_id }).catch(() => {});
      return;
    }
    studio.session = ack.session_id;
  } catch (error) {
    if (studio.pc !== pc) return;
    closePeer();
    setPhase("error", `Could not go live: ${error.message}`);
    return;
  }
  onConnectionState(pc);
}

function onConnectionState(pc) {
  if (studio.pc !== pc) return;
  switch (pc.connectionState) {
    case "connected":
      setPhase("live", "You are live.");
      break;
    case "disconnected":
      // ICE often recovers from a short network hiccup by itself; "failed" follows if it does not.
      setPhase("connecting", "Connection interrupted: trying to recover…");
      break;
    case "failed":
      unpublish(studio.session);
      closePeer();
      setPhase("error", "The connection to the server failed. Check your network and go live again.");
      break;
    default:
      break;
  }
}

function closePeer() {
  if (studio.pc) studio.pc.close();
  if (studio.screen) studio.screen.track?.stop();
  studio.pc = null;
  studio.session = null;
  studio.screen = null;
  updateControls();
}

function unpublish(session) {
  if (session) studio.socket.call("unpublish", { session_id: session }).catch(() => {});
}

async function endShow() {
  const { session, pc } = studio;
  studio.pc = null; // Its state changes are no longer news.
  setPhase("ended", "Ending the show…");
  try {
    // Ask first, then hang up: closing the connection first would end the session under the request.
    if (session) await studio.socket.call("unpublish", { session_id: session });
    setPhase("ended", "The show has ended.");
  } catch (error) {
    if (error.code === "session_not_found") setPhase("ended", "The show has ended."); // It ended already.
    else setPhase("error", `The stream stopped, but the server did not confirm the end: ${error.message}`);
  } finally {
    studio.pc = pc;
    closePeer();
  }
}

// Leaving the page mid-show: the server closes a socket's sessions when it disconnects; say so now rather
// than wait for the connection to time out.
function onPageHide() {
  if (studio.session) studio.socket?.close();
}

// --- screen share -------------------------------------------------------------------------------------------

// A second video section on the same connection (docs/events.md, "Tracks and renegotiation"). Stopping keeps
// the section, inactive, and sharing again reuses it, so the SDP only ever grows by one section.
async function shareScreen() {
  const { pc, session } = studio;
  if (!pc || !session || studio.screen?.track) return;
  $("share-screen").disabled = true;
  $("screen-status").textContent = "";
  let track;
  try {
    [track] = (await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } } })).getVideoTracks();
  } catch (error) {
    $("screen-status").textContent = error.name === "NotAllowedError" ? "" : `Cannot share the screen: ${error.message}`;
    updateControls();
    return;
  }
  let transceiver = studio.screen?.transceiver;
  if (transceiver) {
    transceiver.direction = "sendonly";
    await transceiver.sender.replaceTrack(track);
  } else {
    transceiver = pc.addTransceiver(track, { direction: "sendonly" });
    preferH264(transceiver);
  }
  studio.screen = { transceiver, track };
  track.addEventListener("ended", stopScreen); // The browser's own "Stop sharing" button.
  await renegotiate(pc, session, "Sharing your screen.");
}

async function stopScreen() {
  const { pc, session, screen } = studio;
  if (!pc || !session || !screen?.track) return;
  screen.track.removeEventListener("ended", stopScreen);
  screen.track.stop();
  screen.track = null;
  screen.transceiver.direction = "inactive";
  await screen.transceiver.sender.replaceTrack(null);
  await renegotiate(pc, session, "");
}

async function renegotiate(pc, session, done) {
  try {
    await exchangeOverSocket(pc, studio.socket, "renegotiate", { session_id: session });
    if (studio.pc === pc) $("screen-status").textContent = done;
  } catch (error) {
    if (studio.pc === pc) $("screen-status").textContent = `The screen share did not change: ${error.message}`;
  }
  updateControls();
}

// --- stream key for encoders (OBS) -----------------------------------------------------------------------

async function rotateKey() {
  $("key-rotate").disabled = true;
  $("key-error").textContent = "";
  try {
    const result = await api("/api/me/stream-key", { method: "POST" });
    $("stream-key").value = result.stream_key;
    $("key-confirm").hidden = true;
    $("key-result").hidden = false;
  } catch (error) {
    $("key-error").textContent = `Could not make a new key: ${error.message}`;
  } finally {
    $("key-rotate").disabled = false;
  }
}

function copyFrom(inputId) {
  const input = $(inputId);
  input.select();
  navigator.clipboard?.writeText(input.value).catch(() => {});
}

// --- start ----------------------------------------------------------------------------------------------

function wire() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("room-form").addEventListener("submit", chooseRoom);
  $("camera-retry").addEventListener("click", startCamera);
  $("go-live").addEventListener("click", goLive);
  $("end-show").addEventListener("click", endShow);
  $("share-screen").addEventListener("click", shareScreen);
  $("stop-screen").addEventListener("click", stopScreen);
  $("key-show").addEventListener("click", () => {
    $("key-confirm").hidden = false;
    $("key-result").hidden = true;
  });
  $("key-cancel").addEventListener("click", () => {
    $("key-confirm").hidden = true;
  });
  $("key-rotate").addEventListener("click", rotateKey);
  $("copy-whip").addEventListener("click", () => copyFrom("whip-url"));
  $("copy-key").addEventListener("click", () => copyFrom("stream-key"));
  window.addEventListener("pagehide", onPageHide);
}

async function resume() {
  try {
    adopt(await requestJson("/api/auth/refresh", { method: "POST", body: {} }));
    signedIn();
  } catch (error) {
    signedOut(error.status === 401 ? "" : error.message);
  }
}

wire();
resume();
