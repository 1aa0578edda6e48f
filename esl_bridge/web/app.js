// esl-bridge web client: a softphone page built on the SDK (/sdk.js). No build step.
//
// Call flow (see the README, "Web client"): a call is an invitation whose content carries
// a ChanId; once it is accepted the page creates the peer connection, waits for ICE
// gathering to finish (no trickle), sends {"Cmd":"Offer"} to the other side of the call
// (the callee number, or the caller uid of an incoming call) and applies its
// {"Cmd":"Answer"}. Every other call-control message is a peer message with a "Cmd" too.

import { createClient, LocalInvitationState } from "/sdk.js";

const $ = (id) => document.getElementById(id);
const UID_RE = /^[\x21-\x7e]{1,64}$/;
const ICE_GATHER_LIMIT_MS = 5000;
const BUSY_REFUSAL = JSON.stringify({ Cmd: "Calling", Reason: "calling" });

const ui = {
  conn: $("conn-state"), message: $("message"),
  loginForm: $("login-form"), uid: $("uid"), token: $("token"), tokenRow: $("token-row"),
  login: $("login"), logout: $("logout"), identity: $("identity"),
  numbersBox: $("numbers-box"), numbers: $("numbers"), demoHint: $("demo-hint"),
  demoCallMe: $("demo-call-me"),
  statusBox: $("status-box"), state: $("call-state"), peer: $("call-peer"),
  timer: $("call-timer"), reason: $("call-reason"),
  incoming: $("incoming"), caller: $("caller"), incomingNote: $("incoming-note"),
  accept: $("accept"), refuse: $("refuse"),
  dialForm: $("dial-form"), contact: $("contact"), backspace: $("backspace"),
  keypadLabel: $("keypad-label"), dialpad: $("dialpad"), dtmfSent: $("dtmf-sent"),
  call: $("call"), hangup: $("hangup"),
  inCall: $("in-call"), mute: $("mute"), meter: $("mic-level"), meterBar: $("mic-level-bar"),
  mediaState: $("media-state"), dtmfReceived: $("dtmf-received"),
  remoteAudio: $("remote-audio"),
};

let config = null;
let client = null;
let conn = { state: "offline", text: "Offline" };
let loggedInAs = null;
let call = null; // the current call, see newCall()
let ended = null; // {reason, peer} of the last call once it ended
const history = []; // every call state entered, for tests and debugging
let audioCtx = null;
let tone = null;
let clockTimer = null;

// ---- words ---------------------------------------------------------------------------

const STATE_WORDS = {
  offline: "Not logged in",
  idle: "Idle \u2013 ready to call",
  calling: "Calling\u2026",
  ringing: "Ringing\u2026",
  incoming: "Incoming call",
  connected: "Connected",
  ended: "Call ended",
};

function refusalText(response, number) {
  let body = null;
  try { body = JSON.parse(response); } catch { body = null; }
  if (body === null || typeof body !== "object") {
    const word = String(response ?? "").trim().toLowerCase();
    if (word === "busy" || word === "calling") return "The line is busy.";
    return "The call was refused.";
  }
  if (body.Cmd === "Calling") return "The line is busy.";
  const reason = String(body.Reason ?? "").toLowerCase();
  const cause = body.Cause ? String(body.Cause) : "";
  switch (reason) {
    case "busy": case "calling": return "The line is busy.";
    case "no_answer": return "No answer.";
    case "rejected": return "The call was declined.";
    case "not_registered": return `Extension ${number} is not registered (its phone is not connected).`;
    case "unknown_number": return `Number ${number} does not exist.`;
    case "unreachable": return `${number} cannot be reached right now.`;
    case "not_in_acc_rule": return `${number} is not a number this gateway may call.`;
    case "rtm2sip_off": return "Calls to phones are switched off on this gateway.";
    case "capacity": return "All lines are in use. Try again in a moment.";
    case "canceled": return "The call was canceled.";
    case "shutdown": return "The gateway is shutting down. Try again shortly.";
    case "offline": return "The callee is offline.";
    case "no_microphone": case "microphone": return "The callee has no working microphone.";
    default:
      return `The call was refused (${[reason, cause].filter(Boolean).join(", ") || "no reason given"}).`;
  }
}

function localFailureText(reason) {
  switch (reason) {
    case "PEER_OFFLINE": return "The callee is offline.";
    case "PEER_NO_RESPONSE": return "No answer: the callee did not respond.";
    case "INVITATION_EXPIRE": return "No answer.";
    case "NOT_LOGGEDIN": return "The call ended because you are no longer logged in.";
    default: return `The call failed (${reason}).`;
  }
}

function remoteFailureText(reason, who) {
  switch (reason) {
    case "PEER_OFFLINE": return `Missed call from ${who}: the caller went offline.`;
    case "INVITATION_EXPIRE": return `Missed call from ${who}.`;
    case "ACCEPT_FAILURE": return "The call could not be connected.";
    default: return `The call from ${who} failed (${reason}).`;
  }
}

function sendErrorText(err, number) {
  switch (err?.code) {
    case "NOT_LOGGEDIN": case "DISCONNECTED": return "You are not connected: log in and try again.";
    case "INVALID_ARGUMENT": return `\u201c${number}\u201d cannot be called (not a valid number or user id).`;
    case "TIMEOUT": return "The gateway did not answer. Check the network and try again.";
    default: return `The call could not be placed (${err?.code ?? err}).`;
  }
}

function micErrorText(err) {
  switch (err?.name) {
    case "NotAllowedError": case "PermissionDeniedError": case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this page in the browser's site settings, then try again.";
    case "NotFoundError": case "DevicesNotFoundError": case "OverconstrainedError":
      return "No microphone was found. Connect a microphone and try again.";
    case "NotReadableError": case "TrackStartError": case "AbortError":
      return "The microphone could not be started. Is another application using it?";
    case "InsecureContext":
      return "The microphone needs a secure page: open this phone over HTTPS (or on localhost).";
    default:
      return `The microphone could not be used (${err?.name ?? err}).`;
  }
}

function loginErrorText(err) {
  const detail = err?.message?.replace(/^[A-Z_]+: /, "") ?? "";
  switch (err?.code) {
    case "AUTH_FAILED": return `Login failed: the token was not accepted${detail && detail !== err.code ? ` (${detail})` : ""}.`;
    case "UID_RESERVED": return "Login failed: this user id belongs to the gateway (a phone number). Choose another one.";
    case "APPID_REFUSED": return "Login failed: this gateway does not serve this application.";
    case "INVALID_ARGUMENT": case "BAD_MESSAGE": return "Login failed: the user id is not valid (1 to 64 characters, no spaces).";
    case "CONNECT_FAILED": return "Login failed: the gateway cannot be reached. Check the network.";
    case "TIMEOUT": return "Login failed: the gateway did not answer.";
    default: return `Login failed (${err?.code ?? err}).`;
  }
}

function connectionText(state, reason) {
  switch (state) {
    case "CONNECTED": return ["connected", `Connected as ${loggedInAs}`];
    case "CONNECTING": return ["connecting", "Connecting\u2026"];
    case "RECONNECTING": return ["reconnecting", "Network lost \u2013 reconnecting\u2026"];
    case "ABORTED":
      if (reason === "REMOTE_LOGIN") return ["offline", "Offline: this user id logged in somewhere else"];
      if (reason === "BANNED_BY_SERVER") return ["offline", "Offline: the gateway closed the connection"];
      if (reason === "LOGIN_FAILURE") return ["offline", "Offline: the login was refused on reconnect"];
      return ["offline", `Offline (${reason})`];
    default:
      if (reason === "LOGOUT") return ["offline", "Offline: logged out"];
      if (reason === "LOGIN_FAILURE") return ["offline", "Offline: login failed"];
      if (reason === "LOGIN_TIMEOUT") return ["offline", "Offline: the gateway could not be reached again"];
      return ["offline", "Offline"];
  }
}

// ---- small helpers -------------------------------------------------------------------

function newChanId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `web-${Date.now().toString(36)}-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function formatDuration(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function showMessage(text, kind = "error") {
  ui.message.textContent = text;
  ui.message.className = `message message-${kind}`;
  ui.message.hidden = !text;
}

function ensureAudioContext() {
  const Ctx = window.AudioContext ?? window.webkitAudioContext;
  if (!Ctx) return null;
  if (!audioCtx) {
    try { audioCtx = new Ctx(); } catch { return null; }
  }
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

// Locally generated tones: "ring" (incoming call) and "ringback" (the callee rings).
function startTone(kind) {
  stopTone();
  const ctx = ensureAudioContext();
  if (!ctx) return;
  const spec = kind === "ring"
    ? { freqs: [400, 450], bursts: [[0, 0.4], [0.6, 0.4]], period: 3, level: 0.12 }
    : { freqs: [425], bursts: [[0, 1]], period: 5, level: 0.05 };
  const gain = ctx.createGain();
  gain.gain.value = 0;
  gain.connect(ctx.destination);
  const oscillators = spec.freqs.map((freq) => {
    const osc = ctx.createOscillator();
    osc.frequency.value = freq;
    osc.connect(gain);
    osc.start();
    return osc;
  });
  const schedule = () => {
    const t0 = ctx.currentTime + 0.05;
    for (const [start, length] of spec.bursts) {
      gain.gain.setValueAtTime(spec.level / spec.freqs.length, t0 + start);
      gain.gain.setValueAtTime(0, t0 + start + length);
    }
  };
  schedule();
  tone = { kind, gain, oscillators, timer: setInterval(schedule, spec.period * 1000) };
}

function stopTone() {
  if (!tone) return;
  clearInterval(tone.timer);
  for (const osc of tone.oscillators) { try { osc.stop(); } catch { /* stopped */ } }
  tone.gain.disconnect();
  tone = null;
}

// A short dual tone as feedback for a key pressed during a call.
const DTMF_FREQS = {
  1: [697, 1209], 2: [697, 1336], 3: [697, 1477], 4: [770, 1209], 5: [770, 1336],
  6: [770, 1477], 7: [852, 1209], 8: [852, 1336], 9: [852, 1477], "*": [941, 1209],
  0: [941, 1336], "#": [941, 1477],
};

function keyBeep(digit) {
  const ctx = audioCtx;
  const freqs = DTMF_FREQS[digit];
  if (!ctx || !freqs || ctx.state !== "running") return;
  const gain = ctx.createGain();
  gain.gain.value = 0.04;
  gain.connect(ctx.destination);
  const stopAt = ctx.currentTime + 0.12;
  for (const f of freqs) {
    const osc = ctx.createOscillator();
    osc.frequency.value = f;
    osc.connect(gain);
    osc.start();
    osc.stop(stopAt);
  }
  setTimeout(() => gain.disconnect(), 300);
}

// ---- the call ------------------------------------------------------------------------

function newCall(direction, peer, display, chanId) {
  return {
    direction, // "out" | "in"
    peer, // the uid the call's peer messages go to / come from
    display, // what the page shows for the other side
    chanId,
    state: null, // set at once by setCallState
    note: "",
    invitation: null,
    stream: null,
    pc: null,
    connectedAt: null,
    muted: false,
    dtmfSent: "",
    dtmfReceived: "",
    media: "",
    meter: null,
    checking: false,
    ended: false,
  };
}

function setCallState(c, state, note = "") {
  if (c !== call || c.ended) return;
  if (c.state !== state) history.push(state);
  c.state = state;
  c.note = note;
  if (state === "ringing") {
    if (tone?.kind !== "ringback") startTone("ringback");
  } else if (state === "incoming" && !note) {
    if (tone?.kind !== "ring") startTone("ring");
  } else {
    stopTone();
  }
  if (state === "connected" && c.connectedAt === null) c.connectedAt = Date.now();
  render();
}

function sendToPeer(c, body) {
  if (!client || !loggedInAs) return Promise.resolve(false);
  return client.sendMessageToPeer({ text: JSON.stringify(body) }, c.peer)
    .then((r) => r.hasPeerReceived, () => false);
}

/** End call `c` locally with a sentence for the user; `notify`: tell the peer (EndCall);
 * `normal`: an ordinary hang-up rather than a failure (shown calmer). */
function endCall(c, reason, { notify = false, normal = false } = {}) {
  if (!c || c.ended) return;
  c.ended = true;
  if (notify) sendToPeer(c, { Cmd: "EndCall" });
  stopTone();
  stopMeter(c);
  if (c.pc) {
    try { c.pc.close(); } catch { /* closed */ }
  }
  if (c.stream) for (const track of c.stream.getTracks()) track.stop();
  if (ui.remoteAudio.srcObject) ui.remoteAudio.srcObject = null;
  if (call === c) call = null;
  ended = {
    reason,
    normal,
    peer: `${c.direction === "out" ? "to" : "from"} ${c.display}`,
    seconds: c.connectedAt ? callSeconds(c) : null,
  };
  history.push("ended");
  render();
}

function callSeconds(c) {
  return c?.connectedAt ? Math.floor((Date.now() - c.connectedAt) / 1000) : 0;
}

async function getMicrophone() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    const err = new Error("the page is not a secure context");
    err.name = "InsecureContext";
    throw err;
  }
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: false,
  });
}

function startMeter(c) {
  const ctx = ensureAudioContext();
  if (!ctx || !c.stream || c.meter) return;
  try {
    const source = ctx.createMediaStreamSource(c.stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const rms = Math.sqrt(sum / samples.length);
      const db = rms > 0 ? 20 * Math.log10(rms) : -100;
      const level = c.muted ? 0 : Math.max(0, Math.min(100, Math.round(((db + 60) / 60) * 100)));
      ui.meterBar.style.width = `${level}%`;
      ui.meter.setAttribute("aria-valuenow", String(level));
    }, 100);
    c.meter = { source, analyser, timer };
  } catch {
    c.meter = null;
  }
}

function stopMeter(c) {
  if (!c.meter) return;
  clearInterval(c.meter.timer);
  c.meter.source.disconnect();
  c.meter = null;
  ui.meterBar.style.width = "0%";
  ui.meter.setAttribute("aria-valuenow", "0");
}

function waitForIceGathering(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const onCandidate = (ev) => { if (!ev.candidate) done(); };
    const timer = setTimeout(done, limitMs); // send what was gathered so far
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

/** Both sides agreed: set up the audio (the browser always offers). */
async function startMedia(c) {
  if (c.ended || c.pc) return;
  let pc;
  try {
    pc = new RTCPeerConnection({ iceServers: config.ice_servers ?? [] });
  } catch (err) {
    endCall(c, `Audio could not be set up (${err.name ?? err}).`, { notify: true });
    return;
  }
  c.pc = pc;
  c.media = "Setting up audio\u2026";
  render();
  pc.addEventListener("track", (ev) => {
    const stream = ev.streams[0] ?? new MediaStream([ev.track]);
    ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.play().catch(() => {
      c.media = "Tap anywhere on the page to hear the other side.";
      render();
      document.addEventListener("click", () => ui.remoteAudio.play().catch(() => {}), { once: true });
    });
  });
  pc.addEventListener("connectionstatechange", () => {
    if (c.ended) return;
    switch (pc.connectionState) {
      case "connected": c.media = "Audio connected"; break;
      case "disconnected": c.media = "Audio interrupted \u2013 trying to recover\u2026"; break;
      case "failed":
        endCall(c, "The audio connection failed (network).", { notify: true });
        return;
      default: break;
    }
    render();
  });
  try {
    for (const track of c.stream.getAudioTracks()) pc.addTrack(track, c.stream);
    if (!c.stream.getAudioTracks().length) pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, ICE_GATHER_LIMIT_MS);
    if (c.ended) return;
    const delivered = await sendToPeer(c, { Cmd: "Offer", ChanId: c.chanId, Sdp: pc.localDescription.sdp });
    if (!delivered && !c.ended) endCall(c, "The other side is gone: the call could not be set up.");
  } catch (err) {
    endCall(c, `Audio could not be set up (${err.name ?? err}).`, { notify: true });
  }
}

async function applyAnswer(c, sdp) {
  if (!c.pc || c.pc.signalingState !== "have-local-offer" || typeof sdp !== "string") return;
  try {
    await c.pc.setRemoteDescription({ type: "answer", sdp });
  } catch (err) {
    endCall(c, `Audio could not be set up (the answer was refused: ${err.name ?? err}).`, { notify: true });
  }
}

function sendDtmf(c, digit) {
  const sender = c.pc?.getSenders().find((s) => s.track?.kind === "audio");
  if (sender?.dtmf?.canInsertDTMF) {
    try { sender.dtmf.insertDTMF(digit, 100, 70); } catch { /* signalling carries it anyway */ }
  }
  sendToPeer(c, { Cmd: "Dtmf", ChanId: c.chanId, Digits: digit });
  c.dtmfSent = (c.dtmfSent + digit).slice(-32);
  keyBeep(digit);
  render();
}

// ---- user actions --------------------------------------------------------------------

async function placeCall(raw) {
  showMessage("");
  const number = String(raw ?? "").trim();
  if (!loggedInAs) { showMessage("Log in first."); return; }
  if (call) return;
  if (!UID_RE.test(number)) {
    showMessage(number ? `\u201c${number}\u201d is not a valid number or user id.` : "Enter a number to call.");
    ui.contact.focus();
    return;
  }
  if (number === loggedInAs) { showMessage("You cannot call yourself."); return; }
  ensureAudioContext();
  const c = newCall("out", number, number, newChanId());
  call = c;
  ended = null;
  setCallState(c, "calling", "Waiting for the microphone\u2026");
  try {
    c.stream = await getMicrophone();
  } catch (err) {
    endCall(c, micErrorText(err));
    return;
  }
  if (c.ended) { for (const t of c.stream.getTracks()) t.stop(); return; }
  startMeter(c);
  const inv = client.createLocalInvitation(number);
  inv.content = JSON.stringify({ Mode: 1, Conference: false, ChanId: c.chanId, UserData: "", SipData: "" });
  inv.channelId = c.chanId;
  c.invitation = inv;
  inv.on("LocalInvitationReceivedByPeer", () => {
    if (c.state === "calling") setCallState(c, "calling", "");
  });
  inv.on("LocalInvitationAccepted", () => {
    if (c.ended) { sendToPeer(c, { Cmd: "EndCall" }); return; } // crossed our hang-up
    setCallState(c, "connected");
    startMedia(c);
  });
  inv.on("LocalInvitationRefused", (response) => endCall(c, refusalText(response, number)));
  inv.on("LocalInvitationCanceled", () => endCall(c, "You hung up.", { normal: true }));
  inv.on("LocalInvitationFailure", (reason) => endCall(c, localFailureText(reason)));
  setCallState(c, "calling", "");
  try {
    await inv.send();
  } catch (err) {
    endCall(c, sendErrorText(err, number));
    return;
  }
  if (c.ended) { inv.cancel().catch(() => {}); return; } // hung up while it was being sent
  // Presence is only a hint: an offline user may still log in while the invitation waits.
  client.queryPeersOnlineStatus([number]).then((peers) => {
    if (peers[number] === false && c.state === "calling" && !c.ended) {
      setCallState(c, "calling", `${number} is offline right now; waiting for them to come online\u2026`);
    }
  }, () => {});
}

function hangUp() {
  const c = call;
  if (!c) return;
  if (c.state === "incoming") { refuseIncoming(); return; }
  const inv = c.invitation;
  if (c.direction === "out" && inv && (inv.getState() === LocalInvitationState.SENT_TO_REMOTE
      || inv.getState() === LocalInvitationState.RECEIVED_BY_REMOTE)) {
    inv.cancel().catch(() => {});
  }
  endCall(c, "You hung up.", { notify: Boolean(inv), normal: true });
}

async function acceptIncoming() {
  const c = call;
  if (!c || c.state !== "incoming") return;
  ensureAudioContext();
  stopTone();
  setCallState(c, "incoming", "Waiting for the microphone\u2026");
  ui.accept.disabled = true;
  try {
    c.stream = await getMicrophone();
  } catch (err) {
    c.invitation.refuse(JSON.stringify({ Cmd: "Refused", Reason: "no_microphone" })).catch(() => {});
    endCall(c, micErrorText(err));
    return;
  }
  if (c.ended) { for (const t of c.stream.getTracks()) t.stop(); return; }
  try {
    await c.invitation.accept(JSON.stringify({ Mode: 1, Conference: false, ChanId: c.chanId, SipData: "" }));
  } catch (err) {
    endCall(c, err?.code === "ALREADY_END"
      ? `Missed call from ${c.display}: the caller hung up.`
      : `The call could not be accepted (${err?.code ?? err}).`);
    return;
  }
  setCallState(c, "connected");
  startMeter(c);
  startMedia(c);
}

function refuseIncoming() {
  const c = call;
  if (!c || c.state !== "incoming") return;
  c.invitation.refuse(JSON.stringify({ Cmd: "Refused", Reason: "rejected" })).catch(() => {});
  endCall(c, `You refused the call from ${c.display}.`, { normal: true });
}

function toggleMute() {
  const c = call;
  if (!c?.stream) return;
  c.muted = !c.muted;
  for (const track of c.stream.getAudioTracks()) track.enabled = !c.muted;
  render();
}

function pressKey(digit) {
  if (call && call.state === "connected") {
    sendDtmf(call, digit);
    return;
  }
  if (call) return;
  const field = ui.contact;
  if (field.value.length < 64) field.value += digit;
  keyBeep(digit);
}

async function logIn(ev) {
  ev.preventDefault();
  showMessage("");
  if (!client) return;
  const uid = ui.uid.value.trim();
  if (!UID_RE.test(uid)) {
    showMessage("Enter a user id: 1 to 64 characters, no spaces.");
    ui.uid.focus();
    return;
  }
  const token = config.open_mode ? undefined : ui.token.value.trim();
  if (!config.open_mode && !token) {
    showMessage("Enter your token (your administrator gives it to you).");
    ui.token.focus();
    return;
  }
  ensureAudioContext();
  loggedInAs = uid;
  ui.login.disabled = true;
  try {
    await client.login(uid, token);
    try { localStorage.setItem("esl-bridge-uid", uid); } catch { /* private mode */ }
    ended = null;
  } catch (err) {
    loggedInAs = null;
    showMessage(loginErrorText(err));
  }
  render();
}

async function logOut() {
  if (call) hangUp();
  showMessage("");
  try { await client?.logout(); } catch { /* offline anyway */ }
  loggedInAs = null;
  ended = null;
  render();
}

// ---- SDK events ----------------------------------------------------------------------

function onConnectionStateChanged(state, reason) {
  const [kind, text] = connectionText(state, reason);
  conn = { state: kind, text };
  if (state === "CONNECTED" && reason === "LOGIN_SUCCESS" && call?.state === "connected") {
    // Back after a network loss: ask the other side whether the call survived.
    call.checking = true;
    sendToPeer(call, { Cmd: "CallState" });
  }
  if (state === "RECONNECTING") {
    showMessage("Network lost. Reconnecting\u2026 A call in progress continues if the audio path survives.", "warning");
  } else if (state === "CONNECTED" && ui.message.classList.contains("message-warning")) {
    showMessage("");
  }
  if (state === "ABORTED" || (state === "DISCONNECTED" && reason !== "LOGIN_FAILURE")) {
    const wasLoggedIn = loggedInAs !== null;
    const lost = call ? ` The call ${call.direction === "out" ? "to" : "from"} ${call.display} ended.` : "";
    loggedInAs = null;
    if (call) endCall(call, reason === "LOGOUT" ? "You logged out." : `The call ended: ${text.replace(/^Offline: /, "")}.`);
    ended = null; // offline is the state now; the banner tells what happened
    if (wasLoggedIn && reason !== "LOGOUT") showMessage(`${text}.${lost} Log in again to make or take calls.`);
  }
  render();
}

function onReconnecting({ attempt, delayMs }) {
  conn = { state: "reconnecting", text: `Network lost \u2013 reconnecting (attempt ${attempt}, in ${Math.max(1, Math.round(delayMs / 1000))} s)\u2026` };
  render();
}

function onRemoteInvitation(ri) {
  let content = {};
  try { content = JSON.parse(ri.content) ?? {}; } catch { content = {}; }
  if (typeof content !== "object") content = {};
  const display = String(content.DisplayName || ri.callerId);
  if (call) {
    ri.refuse(BUSY_REFUSAL).catch(() => {});
    showMessage(`Missed call from ${display}: you were in another call.`, "warning");
    return;
  }
  showMessage(""); // an older notice (e.g. a missed call) is not about this call
  const chanId = String(content.ChanId || ri.channelId || newChanId());
  const c = newCall("in", ri.callerId, display, chanId);
  c.invitation = ri;
  call = c;
  ended = null;
  ri.on("RemoteInvitationCanceled", () => endCall(c, `Missed call from ${display}: the caller hung up.`));
  ri.on("RemoteInvitationFailure", (reason) => endCall(c, remoteFailureText(reason, display)));
  setCallState(c, "incoming");
}

function onPeerMessage({ text }, from) {
  let cmd;
  try { cmd = JSON.parse(text); } catch { return; }
  if (!cmd || typeof cmd !== "object" || typeof cmd.Cmd !== "string") return;
  const c = call;
  const ours = c && (from === c.peer || (config.gateway_uid && from === config.gateway_uid));
  if (cmd.Cmd === "CallState") {
    let state = 0;
    if (ours) state = c.state === "connected" ? 2 : 1;
    client.sendMessageToPeer({ text: JSON.stringify({ Cmd: "CallStateResult", state, Mode: 1 }) }, from)
      .catch(() => {});
    return;
  }
  if (!ours) return;
  if (cmd.ChanId !== undefined && cmd.ChanId !== c.chanId) return;
  switch (cmd.Cmd) {
    case "SipState":
      if ((cmd.State === "ringing" || cmd.State === "early_media") && c.state === "calling") {
        setCallState(c, "ringing");
      }
      break;
    case "EndCall":
      endCall(c, c.state === "connected" ? "The other side hung up." : "The other side ended the call.",
        { normal: c.state === "connected" });
      break;
    case "Answer":
      applyAnswer(c, cmd.Sdp);
      break;
    case "MediaError":
      endCall(c, `Audio could not be set up${cmd.Reason ? ` (${cmd.Reason})` : ""}.`, { notify: true });
      break;
    case "Dtmf": {
      const digits = String(cmd.Digit ?? cmd.Digits ?? "").replace(/[^0-9A-D*#]/gi, "");
      if (digits) {
        c.dtmfReceived = (c.dtmfReceived + digits).slice(-32);
        render();
      }
      break;
    }
    case "CallStateResult":
      if (c.checking) {
        c.checking = false;
        if (cmd.state === 0 && c.state === "connected") {
          endCall(c, "The call was lost while the network was down.");
        }
      }
      break;
    default:
      break;
  }
}

// ---- rendering -----------------------------------------------------------------------

function currentState() {
  if (call) return call.state;
  if (ended) return "ended";
  return loggedInAs && conn.state !== "offline" ? "idle" : "offline";
}

function render() {
  const state = currentState();
  const online = loggedInAs !== null && conn.state !== "offline";
  const c = call;

  document.body.classList.toggle("logged-in", online);
  ui.conn.textContent = conn.text;
  ui.conn.className = `conn conn-${conn.state}`;

  ui.uid.disabled = loggedInAs !== null;
  ui.token.disabled = loggedInAs !== null;
  ui.login.disabled = loggedInAs !== null;
  ui.logout.disabled = loggedInAs === null;
  ui.demoCallMe.disabled = !online || call !== null;
  ui.identity.hidden = !online;
  ui.identity.textContent = online ? `You are ${loggedInAs}. Calls to ${loggedInAs} ring here.` : "";

  ui.statusBox.className = `status status-${state}${ended && !c && ended.normal ? " status-normal" : ""}`;
  // While ringing the incoming-call box says it louder; screen readers still get the words.
  ui.statusBox.classList.toggle("visually-hidden", state === "incoming");
  ui.state.textContent = STATE_WORDS[state];
  let peerText = "";
  if (c) {
    peerText = c.state === "incoming" ? `from ${c.display}`
      : c.direction === "out" ? `to ${c.display}` : `with ${c.display}`;
    if (c.state === "connected") peerText = `with ${c.display}`;
  } else if (ended?.peer) {
    peerText = ended.seconds !== null ? `${ended.peer} \u00b7 ${formatDuration(ended.seconds)}` : ended.peer;
  }
  ui.peer.textContent = peerText;
  ui.timer.hidden = !(c && c.state === "connected");
  ui.timer.textContent = formatDuration(callSeconds(c));
  ui.reason.textContent = c ? c.note : ended ? ended.reason
    : state === "offline" && conn.text !== "Offline" ? conn.text : "";

  const incoming = c?.state === "incoming";
  ui.incoming.hidden = !incoming;
  ui.incoming.classList.toggle("ringing", incoming && !c.note);
  ui.caller.textContent = incoming ? c.display : "";
  ui.incomingNote.textContent = incoming ? c.note : "";
  ui.accept.disabled = !incoming || Boolean(c.note);
  ui.refuse.disabled = !incoming;
  document.title = incoming ? `Incoming call from ${c.display} \u2013 esl-bridge phone` : "esl-bridge phone";

  const inCall = c?.state === "connected";
  ui.contact.disabled = !online || Boolean(c);
  if (c && c.direction === "out") ui.contact.value = c.peer;
  ui.backspace.disabled = !online || Boolean(c);
  ui.keypadLabel.textContent = inCall ? "Keypad: sends tones (DTMF) to the other side" : "Dial pad";
  for (const key of ui.dialpad.querySelectorAll("button")) key.disabled = !online || (Boolean(c) && !inCall);
  ui.dtmfSent.hidden = !(inCall && c.dtmfSent);
  ui.dtmfSent.textContent = inCall && c.dtmfSent ? `Tones sent: ${c.dtmfSent}` : "";
  ui.call.disabled = !online || Boolean(c);
  ui.hangup.disabled = !c || incoming;

  const active = Boolean(c) && !incoming;
  ui.inCall.hidden = !active;
  ui.mute.textContent = c?.muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-pressed", c?.muted ? "true" : "false");
  ui.mute.classList.toggle("btn-active", Boolean(c?.muted));
  ui.mute.disabled = !c?.stream;
  ui.mediaState.textContent = c ? (c.muted ? `Microphone muted. ${c.media}` : c.media) : "";
  ui.dtmfReceived.hidden = !(c && c.dtmfReceived);
  ui.dtmfReceived.textContent = c?.dtmfReceived ? `Tones from the other side: ${c.dtmfReceived}` : "";

  const needClock = Boolean(c && c.state === "connected");
  if (needClock && !clockTimer) clockTimer = setInterval(render, 1000);
  if (!needClock && clockTimer) { clearInterval(clockTimer); clockTimer = null; }
}

function renderNumbers() {
  const numbers = Array.isArray(config.numbers) ? config.numbers : [];
  ui.numbers.replaceChildren(...numbers.map((number) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-number";
    button.textContent = number;
    button.setAttribute("aria-label", `Put ${number} in the number field`);
    button.addEventListener("click", () => {
      if (call) return;
      ui.contact.value = number;
      ui.call.focus();
    });
    item.append(button);
    return item;
  }));
  ui.numbersBox.hidden = numbers.length === 0;
}

// ---- start ---------------------------------------------------------------------------

function wire() {
  ui.loginForm.addEventListener("submit", logIn);
  ui.logout.addEventListener("click", logOut);
  ui.dialForm.addEventListener("submit", (ev) => { ev.preventDefault(); placeCall(ui.contact.value); });
  ui.hangup.addEventListener("click", hangUp);
  ui.accept.addEventListener("click", acceptIncoming);
  ui.refuse.addEventListener("click", refuseIncoming);
  ui.mute.addEventListener("click", toggleMute);
  ui.backspace.addEventListener("click", () => { ui.contact.value = ui.contact.value.slice(0, -1); });
  ui.dialpad.addEventListener("click", (ev) => {
    const key = ev.target.closest("button[data-key]");
    if (key && !key.disabled) pressKey(key.dataset.key);
  });
  document.addEventListener("keydown", (ev) => {
    // Typing 0-9 * # outside a text field during a call sends tones.
    if (!call || call.state !== "connected" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target instanceof HTMLInputElement) return;
    if (/^[0-9*#]$/.test(ev.key)) { ev.preventDefault(); pressKey(ev.key); }
  });
  window.addEventListener("pagehide", () => {
    const c = call;
    if (!c) return;
    if (c.state === "incoming") c.invitation.refuse(JSON.stringify({ Cmd: "Refused", Reason: "rejected" })).catch(() => {});
    else hangUp();
  });
}

function exposeTestHook() {
  window.eslBridgeClient = Object.freeze({
    ready: true,
    state: currentState,
    lastReason: () => (call ? call.note : ended?.reason ?? ""),
    callSeconds: () => callSeconds(call),
    connection: () => ({ ...conn }),
    history: () => [...history],
    chanId: () => call?.chanId ?? null,
    muted: () => Boolean(call?.muted),
    dtmfReceived: () => call?.dtmfReceived ?? "",
    peerConnectionState: () => call?.pc?.connectionState ?? null,
    remoteStream: () => ui.remoteAudio.srcObject,
    localStream: () => call?.stream ?? null,
  });
}

// Demo only: the gateway's simulated phone 1001 dials 0<uid> (POST /demo/call-me).
async function demoCallMe() {
  if (!loggedInAs) { showMessage("Log in first."); return; }
  try {
    const resp = await fetch("/demo/call-me", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ uid: loggedInAs, caller: "1001" }),
    });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    showMessage("Phone 1001 is calling you…", "info");
  } catch (err) {
    showMessage(`The simulated phone could not call (${err.message}).`);
  }
}

async function main() {
  wire();
  ui.demoCallMe.addEventListener("click", demoCallMe);
  try {
    const resp = await fetch("/config.json", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    config = await resp.json();
  } catch (err) {
    showMessage(`The phone could not load its settings (${err.message}). Reload the page.`);
    return;
  }
  ui.tokenRow.hidden = Boolean(config.open_mode);
  ui.demoHint.hidden = !config.demo;
  renderNumbers();
  const params = new URLSearchParams(location.hash.slice(1));
  let savedUid = null;
  try { savedUid = localStorage.getItem("esl-bridge-uid"); } catch { savedUid = null; }
  ui.uid.value = params.get("uid") ?? savedUid ?? (config.demo ? `2${String(Math.floor(Math.random() * 1000)).padStart(3, "0")}` : "");
  if (params.get("token")) ui.token.value = params.get("token");
  client = createClient({ appId: config.appid });
  client.on("ConnectionStateChanged", onConnectionStateChanged);
  client.on("Reconnecting", onReconnecting);
  client.on("RemoteInvitationReceived", onRemoteInvitation);
  client.on("MessageFromPeer", onPeerMessage);
  exposeTestHook();
  render();
}

main();
