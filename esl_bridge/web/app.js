// esl-bridge web client: a softphone page built on the SDK (/sdk.js). No build step.
//
// Calls are the SDK's Call objects (client.call(number), remoteInvitation.accept({})):
// they carry the audio and the call-control messages; this page only shows them (README,
// "Web client" and "Use the SDK in your page").

import { CallError, CallErrorCode, createClient, newConferenceId } from "/sdk.js";

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
  mediaProblem: $("media-problem"),
  remoteAudio: $("remote-audio"),
  confPanel: $("conf-panel"), confStatus: $("conf-status"), confInvite: $("conf-invite"),
  confInviter: $("conf-inviter"), confAccept: $("conf-accept"), confDecline: $("conf-decline"),
  confIdle: $("conf-idle"), confStart: $("conf-start"), confRoom: $("conf-room"),
  confDialIn: $("conf-dialin"), confAddForm: $("conf-add-form"), confAdd: $("conf-add"),
  confAddButton: $("conf-add-button"), confInvites: $("conf-invites"),
  confCount: $("conf-count"), confMembers: $("conf-members"), confMute: $("conf-mute"),
  confLeave: $("conf-leave"), confEnd: $("conf-end"), confAudio: $("conf-audio"),
  confMediaProblem: $("conf-media-problem"),
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
let conf = null; // the conference this page is in or joining, see startConference()
let confInvite = null; // {ri, display}: a conference invitation waiting for Accept/Decline
let confNote = null; // {text, kind}: the last conference outcome, shown in its panel

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
    problems: {}, // one-way audio: direction -> verdict, while not "ok"
    media: "",
    meter: null,
    ended: false,
  };
}

// The banner of each one-way audio verdict (README "One-way audio diagnosis").
const MEDIA_PROBLEM_TEXT = {
  browser_to_switch: {
    browser_silent: "They may not hear you: your microphone sends silence.",
    browser_rtp_missing: "They may not hear you: no audio from this browser reaches the gateway.",
    gateway_not_sending: "They may not hear you: the gateway is not passing your audio on.",
  },
  switch_to_browser: {
    switch_filler_only: "You may not hear them: no audio comes from their side.",
    switch_silent: "You may not hear them: their side sends only silence.",
    gateway_not_sending: "You may not hear them: the gateway is not sending their audio.",
    browser_not_playing: "You may not hear them: their audio does not reach this browser.",
  },
};

function mediaProblemText(problems) {
  return ["browser_to_switch", "switch_to_browser"]
    .map((d) => (problems[d] ? MEDIA_PROBLEM_TEXT[d][problems[d]] ?? "" : ""))
    .filter(Boolean)
    .join(" ");
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
    if (sdk.reconnecting) c.media = "Reconnecting\u2026"; // the call timer keeps running
    else if (state === "connected") c.media = "Audio connected";
    else if (state === "disconnected") c.media = "Audio interrupted \u2013 trying to recover\u2026";
    render();
  });
  sdk.on("reconnecting", () => { c.media = "Reconnecting\u2026"; render(); });
  sdk.on("reconnected", () => { c.media = "Audio connected"; render(); });
  sdk.on("dtmf", (digits) => {
    c.dtmfReceived = (c.dtmfReceived + digits).slice(-32);
    render();
  });
  sdk.on("mediaProblem", ({ direction, verdict }) => {
    if (verdict === "ok") delete c.problems[direction];
    else c.problems[direction] = verdict;
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
  if (conf?.sdk) conf.sdk.leave();
  showMessage("");
  try { await client?.logout(); } catch { /* offline anyway */ }
  loggedInAs = null;
  confInvite = null;
  confNote = null; // "You left the conference." adds nothing to logging out
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
  if (content.Conference === true) { onConferenceInvitation(ri, display); return; }
  if (call || conf || confInvite) {
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
  if (conf?.sdk && from === conf.sdk.peerId) return; // the SDK's Conference answers it
  const ours = c && (from === c.peer || (config.gateway_uid && from === config.gateway_uid));
  client.sendMessageToPeer({ text: JSON.stringify({ Cmd: "CallStateResult", state: ours ? 1 : 0, Mode: 1 }) }, from)
    .catch(() => {});
}

// ---- conference ----------------------------------------------------------------------
//
// The room is the SDK's Conference (client.joinConference / acceptConference): its audio,
// its member list (always the gateway's last ConfMembers) and the moderator's controls.
// This page shows the list (talking, muted, moderator, "You") and the invitations it sent.

function confRefusedText(reason) {
  switch (reason) {
    case "room_full": return "The conference is full.";
    case "too_many_rooms": return "Too many conferences are open on this gateway. Try again later.";
    case "conference_off": return "Conferences are switched off on this gateway.";
    case "switch_error": return "The phone switch could not set up the conference.";
    case "already_joined": return "You are already in this conference (in another tab?).";
    case "bad_request": return "The gateway did not understand the request to join.";
    default: return `The conference could not be joined (${reason || "no reason given"}).`;
  }
}

function confErrorText(reason) {
  switch (reason) {
    case "not_moderator": return "Only the moderator can do that.";
    case "no_such_member": return "That member is no longer in the conference.";
    case "not_in_room": return "You are no longer in this conference.";
    case "switch_error": return "The phone switch could not do that.";
    case "bad_request": return "The gateway did not understand that request.";
    default: return `That could not be done (${reason || "no reason given"}).`;
  }
}

function confEndedText({ reason, detail }) {
  switch (reason) {
    case "left": return ["You left the conference.", "info"];
    case "kicked": return ["The moderator removed you from the conference.", "error"];
    case "room_ended": return ["The conference has ended.", "info"];
    case "media_timeout": return ["The conference ended: no audio arrived from this page.", "error"];
    case "shutdown": return ["The conference ended: the gateway is shutting down.", "error"];
    case "switch_error": return ["The conference ended: the phone switch failed.", "error"];
    case "logout": return ["You logged out.", "info"];
    case "offline": return ["The conference ended: you are offline.", "error"];
    case "lost": return ["The conference was lost while the network was down.", "error"];
    case "remote_ended": return ["The gateway ended the conference.", "error"];
    case "media_failed": return [`The conference audio could not be set up${detail ? ` (${detail})` : ""}.`, "error"];
    default: return [`The conference ended (${reason}).`, "error"];
  }
}

function confJoinErrorText(err) {
  if (err?.code === "CONF_REFUSED") return confRefusedText(err.reason);
  if (err instanceof CallError) return micErrorText(err);
  switch (err?.code) {
    case "PEER_OFFLINE": return "The gateway is not online: the conference cannot start.";
    case "TIMEOUT": return "The gateway did not answer. Try again.";
    case "NOT_LOGGEDIN": case "DISCONNECTED": return "You are not connected: log in and try again.";
    case "ALREADY_END": return "The invitation is no longer valid: the inviter gave up.";
    default: return `The conference could not be joined (${err?.code ?? err}).`;
  }
}

function setConfNote(text, kind = "error") {
  confNote = text ? { text, kind } : null;
  render();
}

async function joinWith(join) {
  if (!loggedInAs || conf || call) return;
  ensureAudioContext();
  // problems: one-way audio, direction -> verdict while not "ok" (as a call's)
  const entry = { sdk: null, invites: [], ended: false, problems: {} };
  conf = entry;
  setConfNote("Joining the conference\u2026", "info");
  let sdk;
  try {
    sdk = await join();
  } catch (err) {
    if (conf === entry) conf = null;
    setConfNote(confJoinErrorText(err));
    return;
  }
  if (conf !== entry) { sdk.leave(); return; } // left (logged out) while joining
  entry.sdk = sdk;
  confNote = null;
  ui.confAudio.srcObject = sdk.remoteAudio;
  sdk.on("remoteTrack", () => {
    ui.confAudio.srcObject = null;
    ui.confAudio.srcObject = sdk.remoteAudio;
    ui.confAudio.play().catch(() => {
      setConfNote("Tap anywhere on the page to hear the conference.", "warning");
      document.addEventListener("click", () => ui.confAudio.play().catch(() => {}), { once: true });
    });
  });
  sdk.on("members", () => render());
  sdk.on("media", () => render());
  // One-way audio: the gateway judges this member's microphone (browser_to_switch) and the
  // room's audio toward this page; the mix's level is not judged (it is silent when nobody
  // speaks), so whatever comes is shown as it comes.
  sdk.on("mediaProblem", ({ direction, verdict }) => {
    if (verdict === "ok") delete entry.problems[direction];
    else entry.problems[direction] = verdict;
    render();
  });
  sdk.on("error", (reason) => setConfNote(confErrorText(reason)));
  sdk.on("ended", (why) => {
    if (conf === entry) conf = null;
    ui.confAudio.srcObject = null;
    const [text, kind] = confEndedText(why);
    setConfNote(text, kind);
  });
  render();
}

function startConference() {
  showMessage("");
  return joinWith(() => client.joinConference(newConferenceId(), { displayName: loggedInAs }));
}

function onConferenceInvitation(ri, display) {
  if (call || conf || confInvite) {
    ri.refuse(BUSY_REFUSAL).catch(() => {});
    showMessage(`Missed conference invitation from ${display}: you were in another call.`, "warning");
    return;
  }
  const invite = { ri, display };
  confInvite = invite;
  confNote = null;
  const gone = (text) => {
    if (confInvite !== invite) return;
    confInvite = null;
    stopTone();
    setConfNote(text, "warning");
  };
  ri.on("RemoteInvitationCanceled", () => gone(`Missed conference invitation from ${display}: it was withdrawn.`));
  ri.on("RemoteInvitationFailure", (reason) => gone(remoteFailureText(reason, display)));
  startTone("ring");
  render();
}

async function acceptConferenceInvite() {
  const invite = confInvite;
  if (!invite) return;
  confInvite = null;
  stopTone();
  await joinWith(() => client.acceptConference(invite.ri, { displayName: loggedInAs }));
}

function declineConferenceInvite() {
  const invite = confInvite;
  if (!invite) return;
  confInvite = null;
  stopTone();
  invite.ri.refuse(JSON.stringify({ Cmd: "Refused", Reason: "rejected" })).catch(() => {});
  setConfNote(`You declined the conference invitation from ${invite.display}.`, "info");
}

const INVITE_WORDS = {
  sending: "inviting\u2026",
  sent: "invited",
  ringing: "ringing\u2026",
  accepted: "accepted",
};

async function addParticipant(raw) {
  const entry = conf;
  if (!entry?.sdk) return;
  const who = String(raw ?? "").trim();
  if (!UID_RE.test(who)) {
    setConfNote(who ? `\u201c${who}\u201d is not a valid user id or number.` : "Enter a user id or a phone number to add.");
    ui.confAdd.focus();
    return;
  }
  if (who === loggedInAs) { setConfNote("You are already in the conference."); return; }
  const item = { who, status: "sending", text: INVITE_WORDS.sending };
  entry.invites.push(item);
  ui.confAdd.value = "";
  confNote = null;
  render();
  const update = (status, text) => { item.status = status; item.text = text; render(); };
  let li;
  try {
    li = await entry.sdk.invite(who);
  } catch (err) {
    update("failed", err?.code === "INVALID_ARGUMENT" ? "not a valid user id or number" : `could not be invited (${err?.code ?? err})`);
    return;
  }
  update("sent", INVITE_WORDS.sent);
  li.on("LocalInvitationReceivedByPeer", () => update("ringing", INVITE_WORDS.ringing));
  li.on("LocalInvitationAccepted", () => update("accepted", INVITE_WORDS.accepted));
  li.on("LocalInvitationRefused", (response) => {
    let reason = "";
    try { reason = String(JSON.parse(response)?.Reason ?? ""); } catch { reason = String(response ?? ""); }
    const short = {
      rejected: "declined", busy: "busy", calling: "busy", no_answer: "no answer",
      room_full: "refused: the conference is full", too_many_rooms: "refused: too many conferences",
    };
    const text = short[reason] ?? refusalText(reason, "", who).replace(/\.$/, "");
    update("refused", text);
  });
  li.on("LocalInvitationCanceled", () => update("canceled", "canceled"));
  li.on("LocalInvitationFailure", (reason) => update("failed", localFailureText(reason).replace(/\.$/, "")));
  if (li.getState() === 2) update("ringing", INVITE_WORDS.ringing); // RECEIVED_BY_REMOTE already
}

function confAction(promise) {
  promise.then(() => render(), (err) => setConfNote(err?.code === "NOT_MODERATOR"
    ? confErrorText("not_moderator") : `That could not be done (${err?.code ?? err}).`));
}

function toggleConferenceMute() {
  if (conf?.sdk) confAction(conf.sdk.mute(!conf.sdk.muted));
}

function kickMember(id) {
  if (conf?.sdk) confAction(conf.sdk.kick(id));
}

function endConference() {
  if (conf?.sdk) confAction(conf.sdk.end());
}

function leaveConference() {
  if (conf?.sdk) conf.sdk.leave();
  else if (conf) { conf = null; setConfNote("You left the conference.", "info"); }
}

function memberItem(m, moderatorView) {
  const item = document.createElement("li");
  item.id = `member-${m.Id}`;
  item.className = `member${m.Talking ? " talking" : ""}${m.Muted ? " muted" : ""}${m.Self ? " self" : ""}`;
  item.dataset.id = String(m.Id);
  const dot = document.createElement("span");
  dot.className = "talk-dot";
  dot.setAttribute("aria-hidden", "true");
  const who = document.createElement("span");
  who.className = "member-name";
  const name = m.Name && m.Name !== m.Uid ? `${m.Name} (${m.Uid})` : m.Uid || m.Name;
  who.textContent = m.Self ? `You \u2013 ${name}` : name;
  const tags = document.createElement("span");
  tags.className = "member-tags";
  const tag = (text, cls, label) => {
    const t = document.createElement("span");
    t.className = `tag ${cls}`;
    t.textContent = text;
    if (label) t.setAttribute("aria-label", label);
    tags.append(t);
  };
  tag(m.Kind === "sip" ? "Phone" : "Web", `tag-${m.Kind}`);
  if (m.Moderator) tag("Moderator", "tag-moderator");
  if (m.Talking) tag("Talking", "tag-talking");
  if (m.Muted) tag("Muted", "tag-muted");
  item.append(dot, who, tags);
  if (moderatorView && !m.Self) {
    const kick = document.createElement("button");
    kick.type = "button";
    kick.className = "btn btn-small";
    kick.id = `kick-${m.Id}`;
    kick.dataset.kick = String(m.Id);
    kick.textContent = "Kick";
    kick.setAttribute("aria-label", `Remove ${name} from the conference`);
    item.append(kick);
  }
  return item;
}

function renderConference(online) {
  const sdk = conf?.sdk ?? null;
  document.body.classList.toggle("in-conference", Boolean(conf) || Boolean(confInvite));
  ui.confPanel.hidden = !online && !conf && !confNote;
  ui.confStatus.textContent = confNote?.text ?? "";
  ui.confStatus.className = `conf-status${confNote ? ` message message-${confNote.kind}` : ""}`;
  ui.confStatus.hidden = !confNote;

  ui.confInvite.hidden = !confInvite;
  ui.confInvite.classList.toggle("ringing", Boolean(confInvite));
  ui.confInviter.textContent = confInvite ? confInvite.display : "";
  if (confInvite) document.title = `Conference invitation from ${confInvite.display} \u2013 esl-bridge phone`;

  ui.confIdle.hidden = Boolean(conf) || Boolean(confInvite);
  ui.confStart.disabled = !online || Boolean(call) || Boolean(conf);
  ui.confRoom.hidden = !sdk;
  const problems = sdk ? mediaProblemText(conf.problems) : "";
  ui.confMediaProblem.hidden = !problems;
  ui.confMediaProblem.textContent = problems;
  if (!sdk) {
    ui.confMembers.replaceChildren();
    ui.confInvites.replaceChildren();
    return;
  }
  ui.confDialIn.hidden = !sdk.dialIn;
  ui.confDialIn.textContent = sdk.dialIn ? `Phones dial ${sdk.dialIn} to join` : "";
  ui.confDialIn.title = sdk.room ? `Room ${sdk.room}` : "";
  const members = sdk.members;
  ui.confCount.textContent = members.length ? `(${members.length})` : "";
  ui.confMembers.replaceChildren(...members.map((m) => memberItem(m, sdk.moderator)));
  ui.confInvites.replaceChildren(...conf.invites.map((inv) => {
    const item = document.createElement("li");
    item.className = `invite invite-${inv.status}`;
    item.textContent = `${inv.who}: ${inv.text}`;
    return item;
  }));
  ui.confInvites.hidden = conf.invites.length === 0;
  const muted = Boolean(sdk.muted);
  ui.confMute.textContent = muted ? "Unmute" : "Mute";
  ui.confMute.setAttribute("aria-pressed", muted ? "true" : "false");
  ui.confMute.classList.toggle("btn-active", muted);
  ui.confEnd.hidden = !sdk.moderator;
  ui.confAddButton.disabled = !online;
  ui.confAdd.disabled = !online;
}

// ---- rendering -----------------------------------------------------------------------

// Online once the gateway took the login, and while it is being reached again (a call
// goes on meanwhile); not while the first login is on its way: a call placed then would
// fail for no reason the user can see.
function isOnline() {
  return loggedInAs !== null && (conn.state === "connected" || conn.state === "reconnecting");
}

function currentState() {
  if (call) return call.state;
  if (ended) return "ended";
  return isOnline() ? "idle" : "offline";
}

function render() {
  const state = currentState();
  const online = isOnline();
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
  ui.call.disabled = !online || Boolean(c) || Boolean(conf) || Boolean(confInvite);
  ui.hangup.disabled = !c || incoming;

  const active = Boolean(c) && !incoming;
  ui.inCall.hidden = !active;
  const muted = Boolean(c?.sdk?.muted);
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-pressed", muted ? "true" : "false");
  ui.mute.classList.toggle("btn-active", muted);
  ui.mute.disabled = !c?.sdk;
  ui.mediaState.textContent = c ? (muted ? `Microphone muted. ${c.media}` : c.media) : "";
  const problems = c ? mediaProblemText(c.problems) : "";
  ui.mediaProblem.hidden = !problems;
  ui.mediaProblem.textContent = problems;
  ui.dtmfReceived.hidden = !(c && c.dtmfReceived);
  ui.dtmfReceived.textContent = c?.dtmfReceived ? `Tones from the other side: ${c.dtmfReceived}` : "";

  renderConference(online);

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
  ui.confStart.addEventListener("click", startConference);
  ui.confAccept.addEventListener("click", acceptConferenceInvite);
  ui.confDecline.addEventListener("click", declineConferenceInvite);
  ui.confAddForm.addEventListener("submit", (ev) => { ev.preventDefault(); addParticipant(ui.confAdd.value); });
  ui.confMute.addEventListener("click", toggleConferenceMute);
  ui.confLeave.addEventListener("click", leaveConference);
  ui.confEnd.addEventListener("click", endConference);
  ui.confMembers.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-kick]");
    if (button && !button.disabled) kickMember(Number(button.dataset.kick));
  });
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
    if (conf?.sdk) conf.sdk.leave();
    if (confInvite) confInvite.ri.refuse(JSON.stringify({ Cmd: "Refused", Reason: "rejected" })).catch(() => {});
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
    mediaProblem: () => (ui.mediaProblem.hidden ? "" : ui.mediaProblem.textContent),
    conferenceMediaProblem: () => (ui.confMediaProblem.hidden ? "" : ui.confMediaProblem.textContent),
    peerConnectionState: () => call?.sdk?.pc?.connectionState ?? null,
    remoteStream: () => (conf ? ui.confAudio.srcObject : ui.remoteAudio.srcObject),
    localStream: () => call?.sdk?.localStream ?? null,
    call: () => call?.sdk ?? null, // the SDK's Call object
    conference: () => conf?.sdk ?? null, // the SDK's Conference object
    conferenceState: () => (conf ? (conf.sdk ? "in" : "joining") : confInvite ? "invited" : "idle"),
    conferenceNote: () => confNote?.text ?? "",
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
