// esl-bridge web client: a softphone page built on the SDK (/sdk.js). No build step.
//
// Calls are the SDK's Call objects (client.call(number), remoteInvitation.accept({})):
// they carry the audio and the call-control messages; this page only shows them (README,
// "Web client" and "Use the SDK in your page").

import { CallError, CallErrorCode, createClient } from "/sdk.js";

const $ = (id) => document.getElementById(id);
const UID_RE = /^[\x21-\x7e]{1,64}$/;
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
  early_media: "Ringing\u2026 (you hear the line)",
  incoming: "Incoming call",
  connected: "Connected",
  ended: "Call ended",
};

function refusalText(reason, cause, number) {
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
    case "": return "The call was refused.";
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
  switch (err?.code) {
    case CallErrorCode.MICROPHONE_DENIED:
      return "Microphone access was denied. Allow the microphone for this page in the browser's site settings, then try again.";
    case CallErrorCode.MICROPHONE_NOT_FOUND:
      return "No microphone was found. Connect a microphone and try again.";
    case CallErrorCode.MICROPHONE_BUSY:
      return "The microphone could not be started. Is another application using it?";
    case CallErrorCode.INSECURE_CONTEXT:
      return "The microphone needs a secure page: open this phone over HTTPS (or on localhost).";
    default:
      return `Audio could not be set up (${err?.code ?? err}).`;
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
//
// The audio is the SDK's (its Call object: microphone, peer connection, call-control
// messages); this page keeps the words, the tones it plays itself and the layout.

function newCall(direction, peer, display) {
  return {
    direction, // "out" | "in"
    peer, // the number called, or the caller's uid
    display, // what the page shows for the other side
    state: null, // set at once by setCallState
    note: "",
    invitation: null, // the RemoteInvitation of an incoming call, until accepted
    sdk: null, // the SDK's Call once there is one
    connectedAt: null,
    dtmfSent: "",
    dtmfReceived: "",
    media: "",
    meter: null,
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
    stopTone(); // early media: the phone's own ringback or announcement is heard instead
  }
  if (state === "connected" && c.connectedAt === null) c.connectedAt = Date.now();
  render();
}

/** End call `c` locally with a sentence for the user; the SDK's call is hung up (EndCall
 * to the other side) unless it ended already. `normal`: an ordinary hang-up rather than a
 * failure (shown calmer). */
function endCall(c, reason, { normal = false } = {}) {
  if (!c || c.ended) return;
  c.ended = true;
  if (c.sdk && !c.sdk.ended) c.sdk.hangup();
  stopTone();
  stopMeter(c);
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

/** Why the SDK's call ended, in words (`ended` event: {reason, detail, cause}). */
function endedText(c, { reason, detail, cause }) {
  switch (reason) {
    case "hangup": return ["You hung up.", true];
    case "refused": return [refusalText(detail, cause, c.display), false];
    case "failed":
      return [c.direction === "out" ? localFailureText(detail) : remoteFailureText(detail, c.display), false];
    case "remote_hangup": return ["The other side hung up.", true];
    case "remote_ended": return ["The other side ended the call.", false];
    case "lost": return ["The call was lost while the network was down.", false];
    case "logout": return ["You logged out.", true];
    case "offline": return ["The call ended: you are offline.", false];
    case "media_failed":
      if (detail === "ice_failed") return ["The audio connection failed (network).", false];
      if (detail === "peer_gone") return ["The other side is gone: the call could not be set up.", false];
      return [`Audio could not be set up${detail ? ` (${detail})` : ""}.`, false];
    default: return [`The call ended (${reason}).`, false];
  }
}

/** Follow the SDK's call `sdk` as page call `c`. */
function attach(c, sdk) {
  c.sdk = sdk;
  ui.remoteAudio.srcObject = sdk.remoteAudio;
  c.media = "Setting up audio\u2026";
  sdk.on("state", (state) => {
    if (state === "ringing") setCallState(c, "ringing");
    else if (state === "early_media") setCallState(c, "early_media");
    else if (state === "connected") setCallState(c, "connected");
  });
  sdk.on("remoteTrack", () => {
    // Set again so that the element picks the new track up, then play (autoplay rules).
    ui.remoteAudio.srcObject = null;
    ui.remoteAudio.srcObject = sdk.remoteAudio;
    ui.remoteAudio.play().catch(() => {
      c.media = "Tap anywhere on the page to hear the other side.";
      render();
      document.addEventListener("click", () => ui.remoteAudio.play().catch(() => {}), { once: true });
    });
  });
  sdk.on("media", (state) => {
    if (state === "connected") c.media = "Audio connected";
    else if (state === "disconnected") c.media = "Audio interrupted \u2013 trying to recover\u2026";
    render();
  });
  sdk.on("dtmf", (digits) => {
    c.dtmfReceived = (c.dtmfReceived + digits).slice(-32);
    render();
  });
  sdk.on("ended", (why) => {
    const [text, normal] = endedText(c, why);
    endCall(c, text, { normal });
  });
  startMeter(c);
}

function startMeter(c) {
  const ctx = ensureAudioContext();
  const stream = c.sdk?.localStream;
  if (!ctx || !stream || c.meter) return;
  try {
    const source = ctx.createMediaStreamSource(stream);
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
      const level = c.sdk?.muted ? 0 : Math.max(0, Math.min(100, Math.round(((db + 60) / 60) * 100)));
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

function sendDtmf(c, digit) {
  c.sdk?.sendDtmf(digit).catch(() => {});
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
  const c = newCall("out", number, number);
  call = c;
  ended = null;
  setCallState(c, "calling", "Waiting for the microphone\u2026");
  let sdk;
  try {
    sdk = await client.call(number);
  } catch (err) {
    endCall(c, err instanceof CallError && err.code !== CallErrorCode.INVALID_ARGUMENT
      ? micErrorText(err) : sendErrorText(err, number));
    return;
  }
  if (c.ended) { sdk.hangup(); return; } // hung up while the microphone or the send waited
  attach(c, sdk);
  if (sdk.ended) { endCall(c, endedText(c, sdk.endReason)[0]); return; }
  setCallState(c, sdk.state, "");
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
  endCall(c, "You hung up.", { normal: true });
}

async function acceptIncoming() {
  const c = call;
  if (!c || c.state !== "incoming") return;
  ensureAudioContext();
  stopTone();
  setCallState(c, "incoming", "Waiting for the microphone\u2026");
  ui.accept.disabled = true;
  let sdk;
  try {
    sdk = await c.invitation.accept({});
  } catch (err) {
    if (err instanceof CallError) endCall(c, micErrorText(err)); // the SDK refused the call
    else {
      endCall(c, err?.code === "ALREADY_END"
        ? `Missed call from ${c.display}: the caller hung up.`
        : `The call could not be accepted (${err?.code ?? err}).`);
    }
    return;
  }
  if (c.ended) { sdk.hangup(); return; }
  attach(c, sdk);
  setCallState(c, "connected");
}

function refuseIncoming() {
  const c = call;
  if (!c || c.state !== "incoming") return;
  c.invitation.refuse(JSON.stringify({ Cmd: "Refused", Reason: "rejected" })).catch(() => {});
  endCall(c, `You refused the call from ${c.display}.`, { normal: true });
}

function toggleMute() {
  const c = call;
  if (!c?.sdk) return;
  c.sdk.mute(!c.sdk.muted);
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
  // Back after a network loss, the SDK's call asks the gateway whether it survived.
  if (state === "RECONNECTING") {
    showMessage("Network lost. Reconnecting\u2026 A call in progress continues if the audio path survives.", "warning");
  } else if (state === "CONNECTED" && ui.message.classList.contains("message-warning")) {
    showMessage("");
  }
  if (state === "ABORTED" || (state === "DISCONNECTED" && reason !== "LOGIN_FAILURE")) {
    const wasLoggedIn = loggedInAs !== null;
    const lost = call ? ` The call ${call.direction === "out" ? "to" : "from"} ${call.display} ended.` : "";
    loggedInAs = null;
    if (call) endCall(call, reason === "LOGOUT" ? "You logged out." : `The call ended: ${text.replace(/^Offline: /, "")}.`, { normal: reason === "LOGOUT" });
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
  const c = newCall("in", ri.callerId, display);
  c.invitation = ri;
  call = c;
  ended = null;
  ri.on("RemoteInvitationCanceled", () => endCall(c, `Missed call from ${display}: the caller hung up.`));
  ri.on("RemoteInvitationFailure", (reason) => endCall(c, remoteFailureText(reason, display)));
  setCallState(c, "incoming");
}

function onPeerMessage({ text }, from) {
  // The SDK's call handles its own messages; a CallState about no call of ours is
  // answered here (0: idle; 1: a call still being set up, before the SDK has one).
  let cmd;
  try { cmd = JSON.parse(text); } catch { return; }
  if (!cmd || typeof cmd !== "object" || cmd.Cmd !== "CallState") return;
  const c = call;
  if (c?.sdk && from === c.sdk.peerId) return;
  const ours = c && (from === c.peer || (config.gateway_uid && from === config.gateway_uid));
  client.sendMessageToPeer({ text: JSON.stringify({ Cmd: "CallStateResult", state: ours ? 1 : 0, Mode: 1 }) }, from)
    .catch(() => {});
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
  const muted = Boolean(c?.sdk?.muted);
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-pressed", muted ? "true" : "false");
  ui.mute.classList.toggle("btn-active", muted);
  ui.mute.disabled = !c?.sdk;
  ui.mediaState.textContent = c ? (muted ? `Microphone muted. ${c.media}` : c.media) : "";
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
    chanId: () => call?.sdk?.chanId ?? null,
    muted: () => Boolean(call?.sdk?.muted),
    dtmfReceived: () => call?.dtmfReceived ?? "",
    peerConnectionState: () => call?.sdk?.pc?.connectionState ?? null,
    remoteStream: () => ui.remoteAudio.srcObject,
    localStream: () => call?.sdk?.localStream ?? null,
    call: () => call?.sdk ?? null, // the SDK's Call object
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
