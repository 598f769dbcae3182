// The viewer's player: watch a room over WHEP, wait while it is not live, and reconnect when it drops.

import { requestJson } from "./net.js";
import { endSession, exchangeSdp, newPeerConnection } from "./webrtc.js";

const $ = (id) => document.getElementById(id);
const room = roomFromPath();
const NOT_LIVE_RETRY_MS = 3000;
const ERROR_RETRY_MS = [2000, 4000, 8000, 15000];
// A connection that stays "disconnected" this long is given up rather than waited for.
const DISCONNECTED_GRACE_MS = 3000;
// Media that stops arriving while the connection still looks up means the stream is gone: the server
// closes viewers when the host leaves, but the browser only notices through ICE consent checks many
// seconds later. Reconnecting finds out at once whether the show is still on.
const STALL_MS = 3000;

function roomFromPath() {
  try {
    return decodeURIComponent(window.location.pathname.split("/")[2] || "");
  } catch {
    return ""; // Malformed escapes: treated as no room.
  }
}

const video = $("video");
const viewer = { pc: null, session: null, attempt: 0, retryTimer: null, failures: 0 };
const stall = { bytes: -1, since: 0, checking: false };

function setState(state, title = "", detail = "") {
  $("player").dataset.state = state;
  $("overlay").hidden = state === "playing";
  $("overlay-title").textContent = title;
  $("overlay-detail").textContent = detail;
  $("live-badge").hidden = state !== "playing";
  updateUnmute();
}

function updateUnmute() {
  $("unmute").hidden = !(video.muted && $("player").dataset.state === "playing");
}

function retryIn(ms) {
  clearTimeout(viewer.retryTimer);
  viewer.retryTimer = setTimeout(connect, ms);
}

function teardown() {
  const { pc, session } = viewer;
  viewer.pc = null;
  viewer.session = null;
  if (pc) pc.close();
  // Free the server's side now; it would notice the dead connection on its own, only later.
  if (session) endSession(session).catch(() => {});
}

async function connect() {
  clearTimeout(viewer.retryTimer);
  teardown();
  const attempt = ++viewer.attempt;
  const pc = await newPeerConnection();
  if (attempt !== viewer.attempt) {
    pc.close(); // Superseded while fetching the ICE servers.
    return;
  }
  viewer.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    play();
  });
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  try {
    // Watching a public room needs no account: no token is sent (a signed-in viewer's cookie goes along).
    const session = await exchangeSdp(pc, `/whep/${encodeURIComponent(room)}`);
    if (attempt !== viewer.attempt) {
      endSession(session).catch(() => {}); // Superseded while negotiating.
      return;
    }
    viewer.session = session;
  } catch (error) {
    if (attempt !== viewer.attempt) return;
    teardown();
    if (error.code === "not_live") {
      viewer.failures = 0;
      setState("not-live", "Not live yet", "This page starts playing by itself as soon as the show begins.");
      // Jitter, so the viewers waiting for a show do not all ask again in the same instant.
      retryIn(NOT_LIVE_RETRY_MS + Math.random() * 1000);
    } else {
      const wait = ERROR_RETRY_MS[Math.min(viewer.failures++, ERROR_RETRY_MS.length - 1)];
      setState("error", "Cannot play this show right now", `${error.message} Trying again shortly.`);
      retryIn(wait);
    }
  }
}

function reconnect(detail) {
  setState("reconnecting", "Reconnecting…", detail);
  retryIn(500);
}

function onConnectionState(pc) {
  if (viewer.pc !== pc) return;
  switch (pc.connectionState) {
    case "connected":
      viewer.failures = 0;
      if (video.videoWidth > 0) setState("playing");
      else setState("connecting", "Starting the picture…");
      break;
    case "disconnected":
      setState("reconnecting", "Connection interrupted…", "Waiting for it to recover.");
      setTimeout(() => {
        if (viewer.pc === pc && pc.connectionState === "disconnected") reconnect("");
      }, DISCONNECTED_GRACE_MS);
      break;
    case "failed":
    case "closed":
      reconnect("The connection was lost.");
      break;
    default:
      break;
  }
}

// Autoplay with sound is refused until the viewer interacts with the page: start muted then.
function play() {
  video.play().catch(() => {
    if (!video.muted) {
      video.muted = true;
      video.play().catch(() => {});
    }
    updateUnmute();
  });
}

function onPlaying() {
  if (viewer.pc && viewer.pc.connectionState === "connected" && video.videoWidth > 0) setState("playing");
}

// Counts received bytes rather than watching currentTime: a MediaStream's clock keeps running without frames.
async function watchForStall() {
  const pc = viewer.pc;
  if (!pc || pc.connectionState !== "connected") {
    stall.bytes = -1;
    return;
  }
  if (stall.checking) return;
  stall.checking = true;
  let bytes = 0;
  try {
    (await pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp") bytes += report.bytesReceived || 0;
    });
  } catch {
    return; // Closed meanwhile: the connection handlers take it from here.
  } finally {
    stall.checking = false;
  }
  if (viewer.pc !== pc) return;
  const now = performance.now();
  if (bytes !== stall.bytes) {
    stall.bytes = bytes;
    stall.since = now;
  } else if (now - stall.since > STALL_MS) {
    stall.bytes = -1;
    reconnect("The stream stopped.");
  }
}

async function showTitle() {
  document.title = `${room} · Pinstream`;
  $("room-title").textContent = room;
  try {
    const info = await requestJson(`/api/rooms/${encodeURIComponent(room)}`);
    $("room-title").textContent = info.title;
    document.title = `${info.title} · Pinstream`;
  } catch {
    // A room made by the host's first publish may not exist yet: the slug will do as a title.
  }
}

$("unmute").addEventListener("click", () => {
  video.muted = false;
  play();
  updateUnmute();
});
video.addEventListener("playing", onPlaying);
video.addEventListener("resize", onPlaying);
video.addEventListener("volumechange", updateUnmute);
window.addEventListener("pagehide", () => {
  if (viewer.session) endSession(viewer.session, { keepalive: true }).catch(() => {});
});
setInterval(watchForStall, 1000);

if (room) {
  setState("connecting", "Connecting…");
  showTitle();
  connect();
} else {
  setState("error", "No room given", "Open a show from the list of live shows.");
}
