// The capture page: sign in, the card's two sides (camera or file), then three face frames from
// the camera within half a second. Plain JavaScript, no build step, no third-party code.
"use strict";

const FRAME_GAP_MS = 150;   // between face frames: ~0.3 s from the first to the third
const MAX_SPREAD_S = 0.5;   // the service takes three frames captured within half a second
const MAX_FRAME_SIDE = 1280; // the frames' long side, in pixels
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("vlensToken");

// --- talking to the app ---

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw { status: response.status, title: body.title || "Something went wrong", detail: body.detail || "" };
  }
  return body;
}

function say(text, kind = "") {
  $("answer").textContent = text;
  $("answer").className = kind;
}

// Show only what the user can do next.
function render(state) {
  document.body.dataset.state = state;
  $("signin").hidden = Boolean(token);
  $("card").hidden = !["NEW", "FRONT_SCANNED", "BACK_SCANNED"].includes(state);
  $("face").hidden = state !== "ID_SCANNED";
  $("again").hidden = state !== "FAILED";
}

function answered(answer) {
  say(answer.message, answer.state === "COMPLETED" ? "done" : "");
  render(answer.state);
  if (answer.state !== "ID_SCANNED") stopCamera();
}

async function problem(error, statusLine) {
  const text = error.title ? `${error.title}. ${error.detail}` : "We could not reach the app. Try again.";
  say(text, "problem");
  if (statusLine) statusLine.textContent = error.title || "Not sent";
  if (error.status === 401) return signedOut();  // the token was refused: sign in again
  try { render((await api("/api/kyc")).state); } catch (_) { /* keep what is shown */ }
}

async function step(path, options, statusLine) {
  say("Sending…");
  try {
    answered(await api(path, options));
    if (statusLine) statusLine.textContent = "Done ✓";
  } catch (error) {
    await problem(error, statusLine);
  }
}

// --- signing in ---

async function signedIn(newToken) {
  token = newToken;
  sessionStorage.setItem("vlensToken", token);
  try { answered(await api("/api/kyc")); } catch (error) { await problem(error); }
}

function signedOut() {
  token = null;
  sessionStorage.removeItem("vlensToken");
  stopCamera();
  render("signed-out");
}

async function offerDemo() {
  const response = await fetch("/demo/info").catch(() => null);
  if (!response || !response.ok) return;
  const info = await response.json();
  $("sample-front").href = info.front;
  $("sample-back").href = info.back;
  $("demo").hidden = false;
}

$("use-token").addEventListener("click", () => {
  const value = $("token").value.trim();
  if (value) signedIn(value);
});

$("test-user").addEventListener("click", async () => {
  say("Signing a test user up…");
  const response = await fetch("/demo/test-user", { method: "POST" });
  if (!response.ok) return say("The test user could not be made.", "problem");
  await signedIn((await response.json()).token);
});

// --- the card ---

for (const side of ["front", "back"]) {
  $(side).addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const headers = { "Content-Type": file.type || "application/octet-stream" };
    await step(`/api/kyc/${side}`, { method: "POST", headers, body: file }, $(`${side}-status`));
    event.target.value = "";  // the same file may be chosen again after a problem
  });
}

// --- the face ---

$("camera").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 1280 } }, audio: false,
    });
    $("video").srcObject = stream;
    await $("video").play();
    $("camera").hidden = true;
    $("shoot").disabled = false;
  } catch (_) {
    say("The camera could not be opened. Allow the camera for this page and try again.", "problem");
  }
});

function stopCamera() {
  const stream = $("video").srcObject;
  if (stream) stream.getTracks().forEach((track) => track.stop());
  $("video").srcObject = null;
  $("camera").hidden = false;
  $("shoot").disabled = true;
}

// Resolves with the time of the next new video frame (or the next paint, where the browser
// cannot tell frames apart), so no two photos are the same frame.
function nextFrame(video) {
  return new Promise((resolve) => {
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback((now) => resolve(now));
    else requestAnimationFrame((now) => resolve(now));
  });
}

function draw(video) {
  const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas;
}

// Only drawing happens inside the half second: encoding a JPEG takes long on a slow phone, so
// the three are encoded once all are drawn.
async function threeFrames(video) {
  const canvases = [], times = [];
  let last = -Infinity;
  for (let tries = 0; canvases.length < 3 && tries < 300; tries++) {
    const now = await nextFrame(video);
    if (now - last < FRAME_GAP_MS) continue;
    last = now;
    canvases.push(draw(video));
    times.push(now / 1000);
  }
  return { canvases, times };
}

// What is wrong with the captured frames, in the user's words; null when they can be sent.
function framesProblem(times) {
  if (times.length !== 3) return "The camera did not give three photos. Take them again.";
  if (times[2] - times[0] > MAX_SPREAD_S) {
    return "The three photos were not taken quickly enough. Hold still and take them again.";
  }
  return null;
}

$("shoot").addEventListener("click", async () => {
  $("shoot").disabled = true;
  const { canvases, times } = await threeFrames($("video"));
  const refused = framesProblem(times);
  if (refused) {
    say(refused, "problem");  // nothing sent
  } else {
    const frames = canvases.map((canvas) => canvas.toDataURL("image/jpeg", 0.9));
    $("shots").replaceChildren(...frames.map((src) => Object.assign(new Image(), { src, alt: "" })));
    const body = JSON.stringify({
      frames: frames.map((url) => url.slice(url.indexOf(",") + 1)),
      capture_times: times,
    });
    const headers = { "Content-Type": "application/json" };
    await step("/api/kyc/liveness", { method: "POST", headers, body });
  }
  $("shoot").disabled = !$("video").srcObject;
});

$("start-over").addEventListener("click", () => step("/api/kyc/start-over", { method: "POST" }));

// --- on load ---

offerDemo();
if (token) signedIn(token);
else { say("Sign in to start."); render("signed-out"); }
