// HLS fallback for the viewer's player: when WebRTC has not been playing for a few seconds (it cannot
// connect, or it failed later), play the room's HLS stream in the same <video> with hls.js (native HLS on
// Safari) and say so on screen. live.js keeps trying WebRTC meanwhile; once it plays again, HLS stops.
// This script only watches the page (#player's data-state), so the WebRTC player needs no change.

const FALLBACK_AFTER_MS = 5000;
const CHECK_MS = 1000;

const player = document.getElementById("player");
const video = document.getElementById("video");
const room = decodeURIComponent(window.location.pathname.split("/")[2] || "");
const source = `/hls/${encodeURIComponent(room)}/index.m3u8`;
const state = { notPlayingSince: Date.now(), hls: null, active: false, probing: false };

function notice() {
  let element = document.getElementById("hls-notice");
  if (!element) {
    element = document.createElement("p");
    element.id = "hls-notice";
    element.className = "hls-notice";
    element.setAttribute("role", "status");
    player.after(element);
  }
  return element;
}

function say(text) {
  const element = notice();
  element.textContent = text;
  element.hidden = !text;
}

// Live and not over: a media playlist without EXT-X-ENDLIST.
async function hlsIsLive() {
  try {
    const response = await fetch(source.replace("index.m3u8", "media.m3u8"), { cache: "no-store" });
    return response.ok && !(await response.text()).includes("#EXT-X-ENDLIST");
  } catch {
    return false;
  }
}

function startHls() {
  state.active = true;
  player.dataset.transport = "hls";
  video.srcObject = null; // A stalled WebRTC stream would hide the HLS picture.
  const Hls = window.Hls;
  if (Hls && Hls.isSupported()) {
    // No worker: the page's Content-Security-Policy allows scripts from this origin only, not blob: workers.
    const hls = new Hls({ enableWorker: false, lowLatencyMode: false });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) stopHls("The HLS stream stopped; trying again.");
    });
    hls.loadSource(source);
    hls.attachMedia(video);
    state.hls = hls;
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = source; // Safari plays HLS natively.
  } else {
    state.active = false;
    return;
  }
  video.muted = true;
  video.play().catch(() => {});
  say("WebRTC could not connect: playing over HLS (a few seconds behind live).");
  document.getElementById("overlay").hidden = true;
}

function stopHls(message = "") {
  if (state.hls) state.hls.destroy();
  else if (state.active) video.removeAttribute("src");
  state.hls = null;
  state.active = false;
  delete player.dataset.transport;
  state.notPlayingSince = Date.now();
  say(message);
}

async function check() {
  const webrtcPlaying = player.dataset.state === "playing" && video.srcObject !== null;
  // Nothing to fall back to before the show (live.js waits for it) or after it ended.
  const notLive = player.dataset.state === "not-live";
  if (webrtcPlaying || notLive) {
    state.notPlayingSince = Date.now();
    if (state.active) stopHls();
    return;
  }
  if (state.active) {
    document.getElementById("overlay").hidden = true; // live.js shows its retry state; the picture plays
    return;
  }
  if (state.probing || Date.now() - state.notPlayingSince < FALLBACK_AFTER_MS) return;
  state.probing = true;
  try {
    if (await hlsIsLive()) startHls();
  } finally {
    state.probing = false;
  }
}

if (room) setInterval(check, CHECK_MS);
