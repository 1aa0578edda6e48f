// esl-bridge browser SDK: signalling and call audio, protocol version 1.
//
// A plain ES module (no build step) served by the gateway at /sdk.js:
//
//   import { createClient } from "/sdk.js";
//   const client = createClient({ appId: "myapp" });   // url defaults to /ws of this origin
//   await client.login("2001", token);
//   const call = await client.call("1000");            // a phone: microphone, audio, all in
//   audioElement.srcObject = call.remoteAudio;
//   call.on("ended", ({ reason }) => { ... });
//   client.on("RemoteInvitationReceived", async (ri) => {
//     const incoming = await ri.accept({});            // an options object: a Call
//   });
//
// Call (README "Use the SDK in your page"): events state, remoteTrack, ended, dtmf,
// mediaProblem;
// hangup(), mute(bool), sendDtmf(digits), getStats(), remoteAudio. Conference rooms:
// client.joinConference(chanId, {...}) / client.acceptConference(ri) give a Conference,
// a Call with members, moderator controls and the conference messages (end of this file). It is built on the
// invitation objects below, which mirror the RTM call-invitation API (LocalInvitation,
// RemoteInvitation, getState(), content, response, channelId) and behave as before:
// ri.accept() or ri.accept("response text") only signals. State numbers, failure reasons
// and API error numbers are those of the protocol reference in the README.

export const PROTOCOL_VERSION = 1;
/** The gateway release this SDK ships with (esl_bridge.__version__; README "Use the SDK in
 * your page" says what may change between releases). */
export const VERSION = "0.1.0";

export const LocalInvitationState = Object.freeze({
  IDLE: 0, SENT_TO_REMOTE: 1, RECEIVED_BY_REMOTE: 2, ACCEPTED_BY_REMOTE: 3,
  REFUSED_BY_REMOTE: 4, CANCELED: 5, FAILURE: 6,
});
export const RemoteInvitationState = Object.freeze({
  IDLE: 0, INVITATION_RECEIVED: 1, ACCEPT_SENT_TO_LOCAL: 2, REFUSED: 3, ACCEPTED: 4,
  CANCELED: 5, FAILURE: 6,
});
export const LocalInvitationFailureReason = Object.freeze({
  PEER_OFFLINE: 1, PEER_NO_RESPONSE: 2, INVITATION_EXPIRE: 3, NOT_LOGGEDIN: 4,
});
export const RemoteInvitationFailureReason = Object.freeze({
  PEER_OFFLINE: 1, ACCEPT_FAILURE: 2, INVITATION_EXPIRE: 3,
});
export const InvitationApiError = Object.freeze({
  INVALID_ARGUMENT: 1, NOT_STARTED: 2, ALREADY_END: 3, ALREADY_ACCEPT: 4, ALREADY_SENT: 5,
});
export const ConnectionState = Object.freeze({
  DISCONNECTED: "DISCONNECTED", CONNECTING: "CONNECTING", CONNECTED: "CONNECTED",
  RECONNECTING: "RECONNECTING", ABORTED: "ABORTED",
});
export const ConnectionChangeReason = Object.freeze({
  LOGIN: "LOGIN", LOGIN_SUCCESS: "LOGIN_SUCCESS", LOGIN_FAILURE: "LOGIN_FAILURE",
  LOGIN_TIMEOUT: "LOGIN_TIMEOUT", INTERRUPTED: "INTERRUPTED", LOGOUT: "LOGOUT",
  BANNED_BY_SERVER: "BANNED_BY_SERVER", REMOTE_LOGIN: "REMOTE_LOGIN",
});

export const LIMITS = Object.freeze({ content: 8192, response: 8192, channelId: 64 });

const LOCAL_NAMES = Object.keys(LocalInvitationState);
const REMOTE_NAMES = Object.keys(RemoteInvitationState);
const LOCAL_ENDED = new Set([3, 4, 5, 6]);
const REMOTE_ENDED = new Set([3, 4, 5, 6]);
// Close codes after which reconnecting would only repeat the problem.
const FINAL_CLOSES = {
  4001: ConnectionChangeReason.REMOTE_LOGIN,
  4002: ConnectionChangeReason.BANNED_BY_SERVER,
  4003: ConnectionChangeReason.BANNED_BY_SERVER,
  4004: ConnectionChangeReason.BANNED_BY_SERVER,
  4006: ConnectionChangeReason.REMOTE_LOGIN,
  4008: ConnectionChangeReason.LOGIN_FAILURE, // ORIGIN_NOT_ALLOWED: [web] allowed_origins
};

const encoder = new TextEncoder();
const utf8Length = (text) => encoder.encode(text).length;

/** An API or protocol error: `code` is the protocol's name, `errno` the RTM number. */
export class RtmError extends Error {
  constructor(code, message, errno) {
    super(message ? `${code}: ${message}` : code);
    this.name = "RtmError";
    this.code = code;
    this.errno = errno ?? InvitationApiError[code];
  }
}

class Emitter {
  constructor() { this._listeners = new Map(); }

  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return this;
  }

  off(name, listener) {
    this._listeners.get(name)?.delete(listener);
    return this;
  }

  once(name, listener) {
    const wrapped = (...args) => { this.off(name, wrapped); listener(...args); };
    return this.on(name, wrapped);
  }

  emit(name, ...args) {
    for (const listener of [...(this._listeners.get(name) ?? [])]) {
      try {
        listener(...args);
      } catch (err) {
        // One faulty listener must not stop the others or the SDK.
        console.error(`esl-bridge SDK: a ${name} listener threw`, err);
      }
    }
  }
}

/** The caller's side of a call invitation. Create it with client.createLocalInvitation. */
export class LocalInvitation extends Emitter {
  constructor(client, calleeId) {
    super();
    this._client = client;
    this.calleeId = String(calleeId);
    this.content = "";
    this.channelId = "";
    this.response = "";
    this.state = LocalInvitationState.IDLE;
    this.failureReason = null;
    this.ref = client._newRef();
    this.invitationId = null;
  }

  getState() { return this.state; }

  /** Send the invitation. Rejects with an RtmError (nothing sent) on an API error. */
  async send() {
    if (this.state !== LocalInvitationState.IDLE) {
      throw new RtmError(this.state === LocalInvitationState.ACCEPTED_BY_REMOTE
        ? "ALREADY_ACCEPT"
        : LOCAL_ENDED.has(this.state) ? "ALREADY_END" : "ALREADY_SENT");
    }
    const content = String(this.content ?? "");
    const channelId = String(this.channelId ?? "");
    if (utf8Length(content) > LIMITS.content || utf8Length(channelId) > LIMITS.channelId) {
      throw new RtmError("INVALID_ARGUMENT", "content or channelId over its limit");
    }
    if (!this._client._loggedIn) {
      this._setState({ state: LocalInvitationState.FAILURE,
        reason: LocalInvitationFailureReason.NOT_LOGGEDIN });
      throw new RtmError("NOT_LOGGEDIN", "log in before sending invitations");
    }
    this._client._locals.set(this.ref, this);
    try {
      const reply = await this._client._request("invite", {
        ref: this.ref, callee: this.calleeId, content, channel_id: channelId,
      });
      this.invitationId = reply.inv;
      // The server has sent it: SENT_TO_REMOTE now, before its state frame arrives.
      if (this.state === LocalInvitationState.IDLE) {
        this._setState({ state: LocalInvitationState.SENT_TO_REMOTE });
      }
    } catch (err) {
      if (this.state === LocalInvitationState.IDLE) this._client._locals.delete(this.ref);
      throw err;
    }
  }

  /** Cancel a sent invitation. Rejects with NOT_STARTED / ALREADY_END / ALREADY_ACCEPT. */
  async cancel() {
    if (this.state === LocalInvitationState.IDLE) throw new RtmError("NOT_STARTED");
    if (this.state === LocalInvitationState.ACCEPTED_BY_REMOTE) {
      throw new RtmError("ALREADY_ACCEPT");
    }
    if (LOCAL_ENDED.has(this.state)) throw new RtmError("ALREADY_END");
    await this._client._request("cancel", { ref: this.ref });
  }

  _setState(msg) {
    const old = this.state;
    if (msg.state === old) return;
    this.state = msg.state;
    if (msg.response !== undefined) this.response = msg.response;
    if (msg.inv) this.invitationId = msg.inv;
    if (LOCAL_ENDED.has(this.state)) this._client._locals.delete(this.ref);
    this.emit("LocalInvitationStateChanged", this.state, old);
    switch (this.state) {
      case LocalInvitationState.RECEIVED_BY_REMOTE:
        this.emit("LocalInvitationReceivedByPeer");
        break;
      case LocalInvitationState.ACCEPTED_BY_REMOTE:
        this.emit("LocalInvitationAccepted", this.response);
        break;
      case LocalInvitationState.REFUSED_BY_REMOTE:
        this.emit("LocalInvitationRefused", this.response);
        break;
      case LocalInvitationState.CANCELED:
        this.emit("LocalInvitationCanceled");
        break;
      case LocalInvitationState.FAILURE:
        this.failureReason = msg.reason;
        this.emit("LocalInvitationFailure",
          Object.keys(LocalInvitationFailureReason)[msg.reason - 1] ?? String(msg.reason));
        break;
      default:
        break;
    }
  }
}

/** The callee's side of a call invitation, handed over by RemoteInvitationReceived. */
export class RemoteInvitation extends Emitter {
  constructor(client, msg) {
    super();
    this._client = client;
    this.invitationId = msg.inv;
    this.callerId = msg.caller;
    this.content = msg.content ?? "";
    this.channelId = msg.channel_id ?? "";
    this.response = "";
    this.state = RemoteInvitationState.INVITATION_RECEIVED;
    this.failureReason = null;
  }

  getState() { return this.state; }

  /** Accept with `this.response` (or the given one), at most 8 KB of UTF-8. Given an
   * options object instead ({deviceId, response}), accept with audio: resolves to a Call
   * (the microphone first; refused, the invitation is refused and a CallError thrown). */
  async accept(response) {
    if (response !== null && typeof response === "object") {
      return acceptCall(this._client, this, response);
    }
    return this._answer("accept", response);
  }

  /** Refuse with `this.response` (or the given one), at most 8 KB of UTF-8. */
  async refuse(response) { return this._answer("refuse", response); }

  async _answer(verb, response) {
    const text = String(response ?? this.response ?? "");
    if (utf8Length(text) > LIMITS.response) {
      throw new RtmError("INVALID_ARGUMENT", "response over 8 KB");
    }
    if (this.state === RemoteInvitationState.ACCEPT_SENT_TO_LOCAL
        || this.state === RemoteInvitationState.ACCEPTED) {
      throw new RtmError("ALREADY_ACCEPT");
    }
    if (REMOTE_ENDED.has(this.state)) throw new RtmError("ALREADY_END");
    this.response = text;
    await this._client._request(verb, { inv: this.invitationId, response: text });
  }

  _setState(msg) {
    const old = this.state;
    if (msg.state === old || msg.state === RemoteInvitationState.IDLE) return;
    this.state = msg.state;
    if (REMOTE_ENDED.has(this.state)) this._client._remotes.delete(this.invitationId);
    this.emit("RemoteInvitationStateChanged", this.state, old);
    switch (this.state) {
      case RemoteInvitationState.ACCEPTED:
        this.emit("RemoteInvitationAccepted");
        break;
      case RemoteInvitationState.REFUSED:
        this.emit("RemoteInvitationRefused");
        break;
      case RemoteInvitationState.CANCELED:
        this.emit("RemoteInvitationCanceled");
        break;
      case RemoteInvitationState.FAILURE:
        this.failureReason = msg.reason;
        this.emit("RemoteInvitationFailure",
          Object.keys(RemoteInvitationFailureReason)[msg.reason - 1] ?? String(msg.reason));
        break;
      default:
        break;
    }
  }
}

function defaultUrl() {
  const url = new URL("/ws", import.meta.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The signalling client. Events: ConnectionStateChanged(state, reason),
 * Reconnecting({attempt, delayMs}), MessageFromPeer({text}, peerId),
 * PeersOnlineStatusChanged({uid: "ONLINE"|"OFFLINE"}), RemoteInvitationReceived(ri). */
export class RtmClient extends Emitter {
  constructor({ url, appId, reconnect = {}, requestTimeout = 10000, iceServers, gatewayUid } = {}) {
    super();
    if (!appId) throw new RtmError("INVALID_ARGUMENT", "appId is required");
    this.url = url ?? defaultUrl();
    this.appId = String(appId);
    this.uid = null;
    this.connectionState = ConnectionState.DISCONNECTED;
    this._backoff = { initialDelay: 500, maxDelay: 8000, maxAttempts: Infinity, ...reconnect };
    this._requestTimeout = requestTimeout;
    this._ws = null;
    this._token = null;
    this._session = null;
    this._loggedIn = false;
    this._nextId = 1;
    this._pending = new Map();
    this._locals = new Map(); // ref -> LocalInvitation
    this._remotes = new Map(); // invitation id -> RemoteInvitation
    this._subscribed = new Set();
    this._refCounter = 0;
    this._closingNotice = null;
    this._reconnectTimer = null;
    this._stopped = true;
    this._connecting = false;
    this._calls = new Set(); // Call objects not ended yet
    this._iceServers = iceServers ?? null;
    this._config = null; // /config.json of the SDK's origin, fetched once for a call
    this._gatewayUidOption = gatewayUid ? String(gatewayUid) : null; // [proxy] rtm_account
  }

  /** Call `number` (an acc_rule number or another user) with audio. Resolves to a Call once
   * the invitation is sent; rejects with a CallError (microphone) or an RtmError. */
  async call(number, { userData = "", sipData = "", deviceId } = {}) {
    return placeCall(this, String(number), { userData, sipData, deviceId });
  }

  /** Join conference room `chanId` (1-64 bytes of UTF-8) with audio: ConfJoin to the gateway
   * uid, then the call's Offer/Answer. Resolves to a Conference once the gateway said
   * ConfJoined; rejects with an RtmError (CONF_REFUSED with `reason`, INVALID_ARGUMENT,
   * NOT_LOGGEDIN, PEER_OFFLINE, TIMEOUT) or a CallError (microphone). */
  async joinConference(chanId, options = {}) {
    return joinConference(this, chanId, options, null);
  }

  /** Accept a RemoteInvitation whose content says "Conference":true and join its room in
   * one step: the microphone, the accept, then joinConference(its ChanId). */
  async acceptConference(remoteInvitation, options = {}) {
    return acceptConference(this, remoteInvitation, options);
  }

  async _loadConfig() {
    if (!this._config) {
      try {
        const resp = await fetch(new URL("/config.json", import.meta.url), { cache: "no-store" });
        this._config = resp.ok ? await resp.json() : {};
      } catch {
        this._config = {};
      }
      if (this._config === null || typeof this._config !== "object") this._config = {};
    }
    return this._config;
  }

  async _iceConfig() {
    if (this._iceServers) return this._iceServers;
    const config = await this._loadConfig();
    return Array.isArray(config.ice_servers) ? config.ice_servers : [];
  }

  /** The uid conference messages go to: the gatewayUid option, else /config.json's. */
  async _gatewayUid() {
    if (this._gatewayUidOption) return this._gatewayUidOption;
    const config = await this._loadConfig();
    return typeof config.gateway_uid === "string" ? config.gateway_uid : "";
  }

  _newRef() {
    this._refCounter += 1;
    return `${this._refCounter.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }

  _setConnectionState(state, reason) {
    if (this.connectionState === state && state !== ConnectionState.RECONNECTING) return;
    this.connectionState = state;
    this.emit("ConnectionStateChanged", state, reason);
    // After the application's listeners: a page that ends its call there says why first.
    for (const call of [...this._calls]) call._onConnectionState(state, reason);
  }

  /** Log in as `uid`; `token` comes from the application server (`esl-bridge token`). */
  async login(uid, token) {
    if (this._loggedIn || this._ws) throw new RtmError("ALREADY_LOGGED_IN");
    this.uid = String(uid);
    this._token = token ?? null;
    this._session = null;
    this._stopped = false;
    this._setConnectionState(ConnectionState.CONNECTING, ConnectionChangeReason.LOGIN);
    try {
      await this._connectAndLogin();
    } catch (err) {
      this._stopped = true;
      this._dropSocket();
      this._setConnectionState(ConnectionState.DISCONNECTED,
        ConnectionChangeReason.LOGIN_FAILURE);
      throw err;
    }
    this._setConnectionState(ConnectionState.CONNECTED, ConnectionChangeReason.LOGIN_SUCCESS);
  }

  async logout() {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    if (this._ws && this._loggedIn) {
      try { await this._request("logout", {}); } catch { /* closing anyway */ }
    }
    this._loggedIn = false;
    this._dropSocket();
    this._endAll();
    this._subscribed.clear();
    this._setConnectionState(ConnectionState.DISCONNECTED, ConnectionChangeReason.LOGOUT);
  }

  /** Resolve to {uid: true|false} for each uid. */
  async queryPeersOnlineStatus(uids) {
    const reply = await this._request("query", { uids: [...uids].map(String) });
    return reply.peers;
  }

  /** Subscribe; PeersOnlineStatusChanged reports changes. Resolves to the current map. */
  async subscribePeersOnlineStatus(uids) {
    const list = [...uids].map(String);
    const reply = await this._request("subscribe", { uids: list });
    list.forEach((uid) => this._subscribed.add(uid));
    return reply.peers;
  }

  async unsubscribePeersOnlineStatus(uids) {
    const list = [...uids].map(String);
    await this._request("unsubscribe", { uids: list });
    list.forEach((uid) => this._subscribed.delete(uid));
  }

  /** Send {text} (or a string) to `peerId`; resolves to {hasPeerReceived}. */
  async sendMessageToPeer(message, peerId) {
    const text = typeof message === "string" ? message : String(message?.text ?? "");
    const reply = await this._request("message", { to: String(peerId), text });
    return { hasPeerReceived: reply.delivered };
  }

  createLocalInvitation(calleeId) {
    return new LocalInvitation(this, calleeId);
  }

  // ---- wire --------------------------------------------------------------------------

  _open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      let opened = false;
      ws.onopen = () => { opened = true; resolve(ws); };
      ws.onerror = () => { if (!opened) reject(new RtmError("CONNECT_FAILED")); };
      ws.onclose = (ev) => {
        if (!opened) reject(new RtmError("CONNECT_FAILED"));
        else if (this._ws === ws) this._onClose(ev);
      };
      ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
      this._ws = ws;
    });
  }

  async _connectAndLogin() {
    this._connecting = true;
    try {
      await this._loginOnce();
    } finally {
      this._connecting = false;
    }
  }

  async _loginOnce() {
    this._closingNotice = null;
    await this._open();
    const fields = { appid: this.appId, uid: this.uid };
    if (this._token) fields.token = this._token;
    if (this._session) fields.session = this._session;
    const reply = await this._request("login", fields, true);
    const resumedOld = this._session !== null && reply.resumed;
    this._session = reply.session;
    this._loggedIn = true;
    if (!resumedOld && this._session !== null) {
      // A fresh session: what the old one held ended on the server.
      this._endAll();
      if (this._subscribed.size) {
        this._request("subscribe", { uids: [...this._subscribed] }).catch(() => {});
      }
    }
  }

  _request(type, fields, duringLogin = false) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN
        || (!this._loggedIn && !duringLogin)) {
      return Promise.reject(new RtmError("NOT_LOGGEDIN", "not connected"));
    }
    const id = this._nextId++;
    this._ws.send(JSON.stringify({ v: PROTOCOL_VERSION, type, id, ...fields }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RtmError("TIMEOUT", `no reply to ${type}`));
      }, this._requestTimeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  _onMessage(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.re !== undefined && msg.re !== null && (msg.type === "ok" || msg.type === "error"
        || msg.type === "pong")) {
      const pending = this._pending.get(msg.re);
      if (!pending) return;
      this._pending.delete(msg.re);
      clearTimeout(pending.timer);
      if (msg.type === "error") pending.reject(new RtmError(msg.code, msg.message, msg.errno));
      else pending.resolve(msg);
      return;
    }
    switch (msg.type) {
      case "invitation": {
        const ri = new RemoteInvitation(this, msg);
        this._remotes.set(ri.invitationId, ri);
        // Acknowledge at once: the caller then sees RECEIVED_BY_REMOTE.
        this._request("ack", { inv: ri.invitationId }).catch(() => {});
        this.emit("RemoteInvitationReceived", ri);
        break;
      }
      case "remote_state":
        this._remotes.get(msg.inv)?._setState(msg);
        break;
      case "local_state":
        this._locals.get(msg.ref)?._setState(msg);
        break;
      case "message":
        for (const call of [...this._calls]) call._onPeerMessage(msg.text, msg.from);
        this.emit("MessageFromPeer", { text: msg.text }, msg.from);
        break;
      case "peer_status":
        this.emit("PeersOnlineStatusChanged", msg.peers);
        break;
      case "closing":
        this._closingNotice = msg;
        break;
      default:
        break;
    }
  }

  _failPending(code) {
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(new RtmError(code));
    }
    this._pending.clear();
  }

  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    this._failPending("DISCONNECTED");
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  }

  /** End every open invitation locally (the server ended them with the session). */
  _endAll() {
    for (const li of [...this._locals.values()]) {
      li._setState({ state: LocalInvitationState.FAILURE,
        reason: LocalInvitationFailureReason.NOT_LOGGEDIN });
    }
    for (const ri of [...this._remotes.values()]) {
      ri._setState({ state: RemoteInvitationState.FAILURE,
        reason: RemoteInvitationFailureReason.INVITATION_EXPIRE });
    }
  }

  _onClose(ev) {
    this._ws = null;
    this._loggedIn = false;
    const code = this._closingNotice?.code ?? ev.code;
    // A page whose origin the gateway refuses learns it from login(): no retry helps.
    this._failPending(code === 4008 ? "ORIGIN_NOT_ALLOWED" : "DISCONNECTED");
    // While (re)connecting, the failed attempt itself decides what comes next.
    if (this._stopped || this._connecting) return;
    if (FINAL_CLOSES[code]) {
      this._stopped = true;
      this._endAll();
      this._setConnectionState(ConnectionState.ABORTED, FINAL_CLOSES[code]);
      return;
    }
    this._setConnectionState(ConnectionState.RECONNECTING, ConnectionChangeReason.INTERRUPTED);
    this._scheduleReconnect(0);
  }

  _scheduleReconnect(attempt) {
    if (this._stopped) return;
    if (attempt >= this._backoff.maxAttempts) {
      this._stopped = true;
      this._endAll();
      this._setConnectionState(ConnectionState.DISCONNECTED,
        ConnectionChangeReason.LOGIN_TIMEOUT);
      return;
    }
    const base = Math.min(this._backoff.maxDelay, this._backoff.initialDelay * 2 ** attempt);
    // Jitter spreads reconnects of many clients after a gateway restart.
    const delayMs = Math.round(base * (0.5 + Math.random() / 2));
    this.emit("Reconnecting", { attempt: attempt + 1, delayMs });
    this._reconnectTimer = setTimeout(async () => {
      if (this._stopped) return;
      try {
        await this._connectAndLogin();
        this._setConnectionState(ConnectionState.CONNECTED,
          ConnectionChangeReason.LOGIN_SUCCESS);
      } catch (err) {
        const ws = this._ws;
        this._ws = null;
        if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
        if (err instanceof RtmError && ["AUTH_FAILED", "ORIGIN_NOT_ALLOWED"].includes(err.code)) {
          this._stopped = true;
          this._endAll();
          this._setConnectionState(ConnectionState.ABORTED,
            ConnectionChangeReason.LOGIN_FAILURE);
          return;
        }
        this._scheduleReconnect(attempt + 1);
      }
    }, delayMs);
  }
}

/** Create a client. `url` defaults to the /ws endpoint of the origin serving this SDK. */
export function createClient({ url, appId, reconnect, requestTimeout, iceServers, gatewayUid } = {}) {
  return new RtmClient({ url, appId, reconnect, requestTimeout, iceServers, gatewayUid });
}

// ---- calls with audio --------------------------------------------------------------------
//
// A Call carries one call's audio between this page and the gateway: the microphone, one
// RTCPeerConnection (the browser always offers, after ICE gathering: no trickle), and the
// call-control peer messages of the protocol reference (Offer/Answer, EndCall, MediaError,
// SipState, Dtmf, CallState). Media starts when the call is answered, or earlier when a
// phone sends early media (SipState "early_media": ringback or an announcement before the
// answer); the answer then keeps that connection.

/** Names of CallError.code. */
export const CallErrorCode = Object.freeze({
  MICROPHONE_DENIED: "MICROPHONE_DENIED", // the user or the browser refused the microphone
  MICROPHONE_NOT_FOUND: "MICROPHONE_NOT_FOUND", // no microphone (or none matches deviceId)
  MICROPHONE_BUSY: "MICROPHONE_BUSY", // it exists but could not be started
  INSECURE_CONTEXT: "INSECURE_CONTEXT", // the page is not https (or localhost)
  MEDIA_FAILED: "MEDIA_FAILED", // the peer connection could not be set up
  INVALID_ARGUMENT: "INVALID_ARGUMENT", // a bad number, digits or option
  CALL_ENDED: "CALL_ENDED", // the call is over
});

/** A call's error: `code` is one of CallErrorCode, `cause` the browser's error if any. */
export class CallError extends Error {
  constructor(code, message, cause) {
    super(message ? `${code}: ${message}` : code);
    this.name = "CallError";
    this.code = code;
    this.cause = cause;
  }
}

/** The one-way audio verdicts of each direction of a call (Call event "mediaProblem"):
 * "browser_to_switch" is what the phone hears of this page, "switch_to_browser" what
 * this page hears of the phone; "ok" when the direction recovered. */
export const MEDIA_VERDICTS = Object.freeze({
  browser_to_switch: Object.freeze([
    "ok", "browser_rtp_missing", "gateway_not_sending", "browser_silent",
  ]),
  switch_to_browser: Object.freeze([
    "ok", "switch_filler_only", "switch_silent", "gateway_not_sending", "browser_not_playing",
  ]),
});

/** Call states, in order; "ended" is final. */
export const CallState = Object.freeze({
  CALLING: "calling", RINGING: "ringing", EARLY_MEDIA: "early_media",
  CONNECTED: "connected", ENDED: "ended",
});

const ICE_GATHER_LIMIT_MS = 5000;
const DTMF_RE = /^[0-9A-Da-d*#]{1,32}$/;

function microphoneError(err) {
  switch (err?.name) {
    case "NotAllowedError": case "PermissionDeniedError": case "SecurityError":
      return new CallError(CallErrorCode.MICROPHONE_DENIED, "microphone access was refused", err);
    case "NotFoundError": case "DevicesNotFoundError": case "OverconstrainedError":
      return new CallError(CallErrorCode.MICROPHONE_NOT_FOUND, "no microphone found", err);
    default:
      return new CallError(CallErrorCode.MICROPHONE_BUSY,
        `the microphone could not be started (${err?.name ?? err})`, err);
  }
}

async function getMicrophone(deviceId) {
  if (!globalThis.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new CallError(CallErrorCode.INSECURE_CONTEXT,
      "the microphone needs a secure page (https or localhost)");
  }
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) audio.deviceId = { exact: String(deviceId) };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: false });
  } catch (err) {
    throw microphoneError(err);
  }
}

function newChanId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `web-${Date.now().toString(36)}-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function parseJson(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

// After an ICE restart's answer, the call is taken as reconnected if its connection is
// still "connected" this long after (when no state change says so first).
const RECONNECTED_CHECK_MS = 3000;

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

/** One call with audio. Made by client.call() or remoteInvitation.accept({...}).
 * Events: state(state, old), remoteTrack(track, stream), ended({reason, detail, cause}),
 * dtmf(digits), media(connectionState of the peer connection), reconnecting(why) and
 * reconnected() around an ICE restart (the network changed; the call stays connected). */
export class Call extends Emitter {
  constructor(client, { direction, peerId, chanId, invitation, stream }) {
    super();
    this._client = client;
    this.direction = direction; // "outgoing" | "incoming"
    this.peerId = peerId; // who the call's messages go to: the number, or the gateway uid
    this.chanId = chanId;
    this.invitation = invitation; // the LocalInvitation or RemoteInvitation under it
    this.localStream = stream;
    this.remoteAudio = new MediaStream(); // attach it to an <audio> element at once
    this.state = CallState.CALLING;
    this.muted = false;
    this.endReason = null; // {reason, detail} once ended
    this.pc = null;
    this._checking = false;
    this.reconnecting = false; // true from a lost path to its ICE restart's connection
    this._restarting = false; // a restart offer is being made
    this._restartOut = false; // a restart offer was sent, its answer not applied yet
    this._reconnectedCheck = null; // the timer of the last restart's answer
    client._calls.add(this);
  }

  get ended() { return this.state === CallState.ENDED; }

  /** Hang up (or cancel, while it rings). Resolves when done locally; never throws. */
  async hangup() {
    if (this.ended) return;
    const inv = this.invitation;
    if (inv instanceof LocalInvitation && (inv.state === LocalInvitationState.SENT_TO_REMOTE
        || inv.state === LocalInvitationState.RECEIVED_BY_REMOTE)) {
      inv.cancel().catch(() => {});
    }
    this._end("hangup", "", { notify: true });
  }

  /** Mute (true) or unmute (false) the microphone: the far side then gets silence. */
  mute(on = true) {
    this.muted = Boolean(on);
    for (const track of this.localStream?.getAudioTracks() ?? []) track.enabled = !this.muted;
  }

  /** Send DTMF digits (0-9 * # A-D, 1 to 32) to the other side. */
  async sendDtmf(digits) {
    const text = String(digits ?? "");
    if (!DTMF_RE.test(text)) {
      throw new CallError(CallErrorCode.INVALID_ARGUMENT, "DTMF digits are 1-32 of 0-9 * # A-D");
    }
    if (this.ended) throw new CallError(CallErrorCode.CALL_ENDED);
    // The gateway plays the signalled digits toward the phone (aiortc has no RFC 4733).
    const delivered = await this._send({ Cmd: "Dtmf", ChanId: this.chanId, Digits: text });
    return { delivered };
  }

  /** Restart ICE now (a new network path; the SDK does it by itself when the path
   * fails or the WebSocket comes back): reconnecting, then reconnected. Never throws. */
  async restartIce() {
    if (this.ended || this.state !== CallState.CONNECTED) return;
    await this._restartIce("app");
  }

  /** Figures of the audio path from the peer connection's statistics (null where the
   * browser has none yet): rttMs, packetsLost, lossFraction, jitterMs, audioLevel (what is
   * heard, 0..1), localAudioLevel (the microphone), codec ("opus/48000"...), bytes. */
  async getStats() {
    const out = {
      rttMs: null, packetsLost: null, packetsReceived: null, lossFraction: null,
      jitterMs: null, audioLevel: null, localAudioLevel: null, codec: null,
      bytesSent: null, bytesReceived: null, connectionState: this.pc?.connectionState ?? null,
    };
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let codecId = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && (s.kind ?? s.mediaType) === "audio") {
        out.packetsLost = s.packetsLost ?? null;
        out.packetsReceived = s.packetsReceived ?? null;
        if (typeof s.jitter === "number") out.jitterMs = s.jitter * 1000;
        if (typeof s.audioLevel === "number") out.audioLevel = s.audioLevel;
        out.bytesReceived = s.bytesReceived ?? null;
        codecId = s.codecId ?? codecId;
        const total = (s.packetsLost ?? 0) + (s.packetsReceived ?? 0);
        if (total > 0) out.lossFraction = Math.max(0, s.packetsLost ?? 0) / total;
      } else if (s.type === "outbound-rtp" && (s.kind ?? s.mediaType) === "audio") {
        out.bytesSent = s.bytesSent ?? null;
        codecId = codecId ?? s.codecId;
      } else if (s.type === "media-source" && s.kind === "audio") {
        if (typeof s.audioLevel === "number") out.localAudioLevel = s.audioLevel;
      } else if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") {
        out.rttMs = s.roundTripTime * 1000;
      } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded"
          && out.rttMs === null && typeof s.currentRoundTripTime === "number") {
        out.rttMs = s.currentRoundTripTime * 1000;
      }
    });
    const codec = codecId ? byId.get(codecId) : null;
    if (codec?.mimeType) out.codec = `${codec.mimeType.replace(/^audio\//i, "")}/${codec.clockRate}`;
    return out;
  }

  // ---- inside ----------------------------------------------------------------------------

  _setState(state) {
    if (this.ended || this.state === state) return;
    const old = this.state;
    this.state = state;
    this.emit("state", state, old);
  }

  _send(body) {
    if (!this._client._loggedIn) return Promise.resolve(false);
    return this._client.sendMessageToPeer({ text: JSON.stringify(body) }, this.peerId)
      .then((r) => r.hasPeerReceived, () => false);
  }

  _endCallBody() { return { Cmd: "EndCall" }; }

  /** End locally: close the audio, tell the peer if `notify`, emit `ended` once. */
  _end(reason, detail = "", { notify = false, cause = "" } = {}) {
    if (this.ended) return;
    if (notify) this._send(this._endCallBody());
    if (this.pc) {
      try { this.pc.close(); } catch { /* closed */ }
    }
    for (const track of this.localStream?.getTracks() ?? []) track.stop();
    this._client._calls.delete(this);
    this.endReason = { reason, detail, cause };
    const old = this.state;
    this.state = CallState.ENDED;
    this.emit("state", CallState.ENDED, old);
    this.emit("ended", this.endReason);
  }

  /** The audio: the browser offers, the gateway answers (early media or the answer). */
  async _startMedia() {
    if (this.ended || this.pc) return;
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: await this._client._iceConfig() });
    } catch (err) {
      this._end("media_failed", String(err?.name ?? err), { notify: true });
      return;
    }
    if (this.ended) { pc.close(); return; }
    this.pc = pc;
    pc.addEventListener("track", (ev) => {
      if (ev.track.kind !== "audio") return;
      for (const old of this.remoteAudio.getAudioTracks()) this.remoteAudio.removeTrack(old);
      this.remoteAudio.addTrack(ev.track);
      this.emit("remoteTrack", ev.track, this.remoteAudio);
    });
    pc.addEventListener("connectionstatechange", () => {
      if (!this.ended) this.emit("media", pc.connectionState);
      if (this.ended || pc !== this.pc) return;
      const state = pc.connectionState;
      if (state === "connected" && this.reconnecting && !this._restarting
          && this._client._loggedIn) {
        this._setReconnecting(false);
      } else if ((state === "disconnected" || state === "failed")
          && this.state === CallState.CONNECTED) {
        // The gateway holds a connected call (README: When the browser's network
        // changes); it ends it with EndCall if the new path does not come in time.
        this._restartIce("ice_" + state);
      } else if (state === "failed") {
        this._end("media_failed", "ice_failed", { notify: true });
      }
    });
    try {
      const stream = this.localStream;
      for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
      if (!stream.getAudioTracks().length) pc.addTransceiver("audio", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, ICE_GATHER_LIMIT_MS);
      if (this.ended) return;
      const delivered = await this._send({ Cmd: "Offer", ChanId: this.chanId, Sdp: pc.localDescription.sdp });
      if (!delivered && !this.ended) this._end("media_failed", "peer_gone");
    } catch (err) {
      this._end("media_failed", String(err?.name ?? err), { notify: true });
    }
  }

  _setReconnecting(on, why = "") {
    if (this.ended || this.reconnecting === on) return;
    // A check left over from an earlier restart does not end this episode: it would say
    // "reconnected" while the WebSocket is still down or before the new path is up.
    clearTimeout(this._reconnectedCheck);
    this._reconnectedCheck = null;
    this.reconnecting = on;
    if (on) this.emit("reconnecting", why);
    else this.emit("reconnected");
  }

  /** ICE restart: a new offer (iceRestart) on the same connection; the gateway answers
   * from a new media leg carrying the same SIP call. Sent once logged in again. */
  async _restartIce(why) {
    this._setReconnecting(true, why);
    const pc = this.pc;
    if (this.ended || !pc || this._restarting || !this._client._loggedIn) return;
    // An offer is out: the first one's answer comes first; a restart whose answer was
    // lost with the WebSocket is taken back and made again.
    if (pc.signalingState !== "stable" && !this._restartOut) return;
    this._restarting = true;
    try {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      this._restartOut = true;
      await waitForIceGathering(pc, ICE_GATHER_LIMIT_MS);
      if (this.ended || pc !== this.pc) return;
      await this._send({ Cmd: "Offer", ChanId: this.chanId, Sdp: pc.localDescription.sdp });
    } catch (err) {
      this._end("media_failed", `ice restart: ${err?.name ?? err}`, { notify: true });
    } finally {
      this._restarting = false;
    }
  }

  async _applyAnswer(sdp) {
    if (!this.pc || this.pc.signalingState !== "have-local-offer" || typeof sdp !== "string") return;
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp });
      this._restartOut = false;
    } catch (err) {
      this._end("media_failed", `answer refused: ${err?.name ?? err}`, { notify: true });
      return;
    }
    // The new DTLS handshake takes the state through "connecting" to "connected" (the
    // listener above); should the state never leave "connected", say so after a while.
    const pc = this.pc;
    clearTimeout(this._reconnectedCheck);
    this._reconnectedCheck = setTimeout(() => {
      this._reconnectedCheck = null;
      if (pc === this.pc && pc.connectionState === "connected" && !this._restarting
          && this._client._loggedIn) {
        this._setReconnecting(false);
      }
    }, RECONNECTED_CHECK_MS);
  }

  _onPeerMessage(text, from) {
    if (this.ended) return;
    const cmd = parseJson(text);
    if (!cmd || typeof cmd.Cmd !== "string" || from !== this.peerId) return;
    if (cmd.Cmd === "CallState") {
      const state = this.state === CallState.CONNECTED ? 2 : 1;
      this._send({ Cmd: "CallStateResult", state, Mode: 1 });
      return;
    }
    if (cmd.ChanId !== undefined && cmd.ChanId !== this.chanId) return;
    switch (cmd.Cmd) {
      case "SipState":
        if (this.state === CallState.CALLING || this.state === CallState.RINGING) {
          if (cmd.State === "early_media") {
            this._setState(CallState.EARLY_MEDIA);
            this._startMedia();
          } else if (cmd.State === "ringing") {
            this._setState(CallState.RINGING);
          }
        }
        break;
      case "Answer":
        this._applyAnswer(cmd.Sdp);
        break;
      case "EndCall":
        this._end(this.state === CallState.CONNECTED ? "remote_hangup" : "remote_ended");
        break;
      case "MediaError":
        this._end("media_failed", String(cmd.Reason ?? ""), { notify: true });
        break;
      case "Dtmf": {
        const digits = String(cmd.Digit ?? cmd.Digits ?? "").replace(/[^0-9A-D*#]/gi, "");
        if (digits) this.emit("dtmf", digits);
        break;
      }
      case "MediaProblem":
        // One-way audio (README "One-way audio diagnosis"): a direction's verdict changed.
        if (MEDIA_VERDICTS[cmd.Direction]?.includes(cmd.Verdict)) {
          this.emit("mediaProblem", { direction: cmd.Direction, verdict: cmd.Verdict });
        }
        break;
      case "CallStateResult":
        if (this._checking) {
          this._checking = false;
          if (cmd.state === 0) this._end("lost", "the call ended while the network was down");
          else this._restartIce("websocket"); // a new network, most likely: a new path
        }
        break;
      default:
        break;
    }
  }

  _onConnectionState(state, reason) {
    if (state === ConnectionState.CONNECTED && reason === ConnectionChangeReason.LOGIN_SUCCESS
        && this.state === CallState.CONNECTED) {
      // Back after a network loss: ask whether the call survived on the gateway.
      this._checking = true;
      this._send({ Cmd: "CallState" });
    } else if (state === ConnectionState.RECONNECTING && this.state === CallState.CONNECTED) {
      this._setReconnecting(true, "websocket");
    } else if (state === ConnectionState.ABORTED || state === ConnectionState.DISCONNECTED) {
      this._end(reason === ConnectionChangeReason.LOGOUT ? "logout" : "offline", String(reason ?? ""));
    }
  }
}

/** A refusal's reason word ("busy", "no_answer", "rejected"...) and FreeSWITCH cause. */
function refusalOf(response) {
  const body = parseJson(response);
  if (body?.Cmd === "Calling") return { detail: "busy", cause: "" };
  if (body) return { detail: String(body.Reason ?? "").toLowerCase(), cause: String(body.Cause ?? "") };
  const word = String(response ?? "").trim().toLowerCase();
  return { detail: word === "calling" ? "busy" : word, cause: "" };
}

async function placeCall(client, number, { userData, sipData, deviceId }) {
  if (!client._loggedIn) throw new RtmError("NOT_LOGGEDIN", "log in before calling");
  if (!/^[\x21-\x7e]{1,64}$/.test(number)) {
    throw new CallError(CallErrorCode.INVALID_ARGUMENT, "not a number or user id");
  }
  const stream = await getMicrophone(deviceId);
  const chanId = newChanId();
  const inv = client.createLocalInvitation(number);
  inv.content = JSON.stringify({
    Mode: 1, Conference: false, ChanId: chanId, UserData: String(userData ?? ""),
    SipData: String(sipData ?? ""),
  });
  inv.channelId = chanId;
  const call = new Call(client, { direction: "outgoing", peerId: number, chanId, invitation: inv, stream });
  inv.on("LocalInvitationAccepted", () => {
    if (call.ended) { call._send({ Cmd: "EndCall" }); return; } // crossed our hang-up
    call._setState(CallState.CONNECTED);
    call._startMedia(); // nothing new when early media started it
  });
  inv.on("LocalInvitationRefused", (response) => {
    const { detail, cause } = refusalOf(response);
    call._end("refused", detail, { cause });
  });
  inv.on("LocalInvitationCanceled", () => call._end("hangup"));
  inv.on("LocalInvitationFailure", (reason) => call._end("failed", reason));
  try {
    await inv.send();
  } catch (err) {
    call._end("failed", err?.code ?? String(err));
    throw err;
  }
  return call;
}

async function acceptCall(client, ri, { deviceId, response } = {}) {
  // The invitation's own checks first: no microphone prompt for a call that cannot be had.
  if (ri.state === RemoteInvitationState.ACCEPT_SENT_TO_LOCAL
      || ri.state === RemoteInvitationState.ACCEPTED) {
    throw new RtmError("ALREADY_ACCEPT");
  }
  if (REMOTE_ENDED.has(ri.state)) throw new RtmError("ALREADY_END");
  const body = parseJson(ri.content) ?? {};
  const chanId = String(body.ChanId || ri.channelId || newChanId());
  let stream;
  try {
    stream = await getMicrophone(deviceId);
  } catch (err) {
    ri.refuse(JSON.stringify({ Cmd: "Refused", Reason: "no_microphone" })).catch(() => {});
    throw err;
  }
  const call = new Call(client, { direction: "incoming", peerId: ri.callerId, chanId, invitation: ri, stream });
  ri.on("RemoteInvitationCanceled", () => call._end("remote_ended", "canceled"));
  ri.on("RemoteInvitationFailure", (reason) => call._end("failed", reason));
  try {
    await ri._answer("accept", response ?? JSON.stringify({ Mode: 1, Conference: false, ChanId: chanId, SipData: "" }));
  } catch (err) {
    call._end("failed", err?.code ?? String(err));
    throw err;
  }
  // Connected from the start, like "calling" for an outgoing call: `state` events report
  // changes after the Call is in the application's hands.
  if (!call.ended) call.state = CallState.CONNECTED;
  call._startMedia();
  return call;
}

// ---- conference rooms ------------------------------------------------------------------
//
// A Conference is a Call whose other side is a FreeSWITCH conference room: the same
// microphone, peer connection and Offer/Answer with the gateway uid, plus the conference
// messages of the protocol reference (README "Use the SDK in your page"): ConfJoin ->
// ConfJoined | ConfRefused, ConfMembers after every change, ConfMute / ConfKick / ConfEnd
// (ConfError when one cannot be done), EndCall with a Reason. Every one carries the ChanId.

const CONF_END_REASONS = new Set(["kicked", "room_ended", "left", "media_timeout", "shutdown",
  "switch_error"]);
const CONF_EVENTS = new Set(["list", "join", "leave", "kick", "mute", "unmute", "talking",
  "silent"]);
const UID_RE = /^[\x21-\x7e]{1,64}$/;

/** A fresh ChanId for a new room: 37 characters of [a-z0-9-], so that fs_cli shows the
 * room under its readable name (eb-<appid>-<ChanId>). */
export function newConferenceId() {
  return newChanId();
}

function checkChanId(chanId) {
  if (typeof chanId !== "string" || chanId.length === 0 || utf8Length(chanId) > LIMITS.channelId) {
    throw new RtmError("INVALID_ARGUMENT", "a conference ChanId is a string of 1 to 64 bytes (UTF-8)");
  }
  return chanId;
}

function checkMemberId(id) {
  if (!Number.isSafeInteger(id) || id < 0) {
    throw new RtmError("INVALID_ARGUMENT", "a member id is the Id (an integer) of a ConfMembers entry");
  }
  return id;
}

/** ConfMembers' list with each entry's fields typed; entries without an integer Id dropped. */
function normalizeMembers(list) {
  if (!Array.isArray(list)) return [];
  return list.filter((m) => m !== null && typeof m === "object" && Number.isSafeInteger(m.Id))
    .map((m) => Object.freeze({
      Id: m.Id,
      Uid: String(m.Uid ?? ""),
      Kind: m.Kind === "sip" ? "sip" : "web",
      Name: String(m.Name ?? ""),
      Talking: m.Talking === true,
      Muted: m.Muted === true,
      Moderator: m.Moderator === true,
      Self: m.Self === true,
    }));
}

function confRefused(reason) {
  const err = new RtmError("CONF_REFUSED", reason || "refused");
  err.reason = String(reason ?? "");
  return err;
}

/** One membership of a conference room. Made by client.joinConference() or
 * client.acceptConference(). Besides the Call's events (state, remoteTrack, media, ended):
 * members(members, event, memberId), error(reason). */
export class Conference extends Call {
  constructor(client, { peerId, chanId, stream, displayName }) {
    super(client, { direction: "outgoing", peerId, chanId, invitation: null, stream });
    this.displayName = displayName;
    this.room = ""; // the FreeSWITCH conference name (fs_cli: conference list)
    this.dialIn = ""; // what a phone dials to join, "" when dial-in is off
    this.moderator = false;
    this.members = []; // always the last ConfMembers' list
    this.memberId = null; // this page's member id, once a ConfMembers said which is Self
    this._joining = null;
  }

  /** Mute (true) or unmute (false) this page in the room: the microphone track and ConfMute. */
  async mute(on = true) {
    this.muted = Boolean(on);
    for (const track of this.localStream?.getAudioTracks() ?? []) track.enabled = !this.muted;
    await this._confSend({ Cmd: "ConfMute", ChanId: this.chanId, Mute: this.muted });
  }

  /** Moderator: mute or unmute member `id` (the Id of a ConfMembers entry). */
  async muteMember(id, on = true) {
    this._moderatorOnly();
    await this._confSend({ Cmd: "ConfMute", ChanId: this.chanId, Mute: Boolean(on), Member: checkMemberId(id) });
  }

  /** Moderator: remove member `id` (web or phone) from the room. */
  async kick(id) {
    this._moderatorOnly();
    await this._confSend({ Cmd: "ConfKick", ChanId: this.chanId, Member: checkMemberId(id) });
  }

  /** Moderator: end the room for every member; `ended` follows with reason room_ended. */
  async end() {
    this._moderatorOnly();
    await this._confSend({ Cmd: "ConfEnd", ChanId: this.chanId });
  }

  /** Leave the room (EndCall); `ended` with reason "left". Never throws. */
  async leave() {
    this._end("left", "", { notify: true });
  }

  async hangup() { return this.leave(); }

  /** Invite a web user or a phone number into this room: the invitation with content
   * {"Mode":1,"Conference":true,"ChanId":chanId}. Resolves to the LocalInvitation, sent. */
  async invite(uidOrNumber) {
    const callee = String(uidOrNumber ?? "").trim();
    if (!UID_RE.test(callee)) {
      throw new RtmError("INVALID_ARGUMENT", "invite a user id or number: 1 to 64 printable characters");
    }
    if (this.ended) throw new CallError(CallErrorCode.CALL_ENDED, "the conference is over");
    const inv = this._client.createLocalInvitation(callee);
    inv.content = JSON.stringify({ Mode: 1, Conference: true, ChanId: this.chanId });
    inv.channelId = this.chanId;
    await inv.send();
    return inv;
  }

  // ---- inside ----------------------------------------------------------------------------

  _endCallBody() { return { Cmd: "EndCall", ChanId: this.chanId }; }

  _moderatorOnly() {
    if (this.ended) throw new CallError(CallErrorCode.CALL_ENDED, "the conference is over");
    if (!this.moderator) throw new RtmError("NOT_MODERATOR", "only the room's moderator can do this");
  }

  async _confSend(body) {
    if (this.ended) throw new CallError(CallErrorCode.CALL_ENDED, "the conference is over");
    if (!(await this._send(body))) throw new RtmError("PEER_OFFLINE", "the gateway is not online");
  }

  /** Send ConfJoin; resolves to this once ConfJoined came (the media then starts). */
  _join() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._joinFailed(new RtmError("TIMEOUT", "no answer to ConfJoin"), "failed", "timeout", true);
      }, this._client._requestTimeout);
      this._joining = { resolve, reject, timer };
      const body = { Cmd: "ConfJoin", ChanId: this.chanId };
      if (this.displayName) body.DisplayName = this.displayName;
      this._send(body).then((delivered) => {
        if (!delivered) {
          this._joinFailed(new RtmError("PEER_OFFLINE", "the gateway is not online"), "failed", "peer_offline");
        }
      });
    });
  }

  _joinFailed(err, reason, detail, notify = false) {
    const joining = this._joining;
    if (!joining) return;
    this._joining = null;
    clearTimeout(joining.timer);
    this._end(reason, detail, { notify });
    joining.reject(err);
  }

  _end(reason, detail = "", options = {}) {
    if (this.ended) return;
    super._end(reason, detail, options);
    // Ended while joining (offline, logout, EndCall): the join promise says so.
    this._joinFailed(new RtmError(reason === "logout" || reason === "offline" ? "NOT_LOGGEDIN"
      : "CONF_ENDED", detail || reason), reason, detail);
  }

  _onPeerMessage(text, from) {
    if (this.ended) return;
    const cmd = parseJson(text);
    if (!cmd || typeof cmd.Cmd !== "string" || from !== this.peerId) return;
    const ours = cmd.ChanId === this.chanId;
    switch (cmd.Cmd) {
      case "ConfJoined":
        if (ours && this._joining) {
          const { resolve, timer } = this._joining;
          this._joining = null;
          clearTimeout(timer);
          this.room = String(cmd.Room ?? "");
          this.dialIn = String(cmd.DialIn ?? "");
          this.moderator = cmd.Moderator === true;
          this.state = CallState.CONNECTED; // like an accepted call: events report changes
          resolve(this);
          this._startMedia();
        }
        return;
      case "ConfRefused":
        if (ours) {
          const reason = String(cmd.Reason ?? "");
          this._joinFailed(confRefused(reason), "refused", reason);
        }
        return;
      case "ConfError":
        if (ours) this.emit("error", String(cmd.Reason ?? ""));
        return;
      case "ConfMembers": {
        if (!ours) return;
        this.members = normalizeMembers(cmd.Members);
        const self = this.members.find((m) => m.Self);
        if (self) {
          this.memberId = self.Id;
          this.moderator = self.Moderator;
          this.muted = self.Muted;
        }
        const event = CONF_EVENTS.has(cmd.Event) ? cmd.Event : "list";
        const member = Number.isSafeInteger(cmd.Member) ? cmd.Member : null;
        this.emit("members", this.members, event, member);
        return;
      }
      case "EndCall":
        if (ours) {
          const reason = String(cmd.Reason ?? "");
          this._end(CONF_END_REASONS.has(reason) ? reason : "remote_ended", reason);
          return;
        }
        break;
      default:
        break;
    }
    super._onPeerMessage(text, from);
  }
}

async function joinConference(client, chanId, options, prepared) {
  const { displayName = "", deviceId, microphone = true, gatewayUid } = options ?? {};
  const room = checkChanId(chanId);
  const name = String(displayName ?? "");
  if ([...name].length > 64) throw new RtmError("INVALID_ARGUMENT", "displayName is at most 64 characters");
  if (!client._loggedIn) throw new RtmError("NOT_LOGGEDIN", "log in before joining a conference");
  for (const call of client._calls) {
    if (call instanceof Conference && call.chanId === room) {
      throw new RtmError("ALREADY_JOINED", "this client is already in that room");
    }
  }
  const peer = prepared?.peer ?? (gatewayUid ? String(gatewayUid) : await client._gatewayUid());
  if (!peer) {
    throw new RtmError("INVALID_ARGUMENT", "no gateway uid: give createClient({gatewayUid}) ([proxy] rtm_account)");
  }
  const stream = prepared?.stream
    ?? (microphone === false ? new MediaStream() : await getMicrophone(deviceId));
  const conf = new Conference(client, { peerId: peer, chanId: room, stream, displayName: name });
  return conf._join();
}

async function acceptConference(client, ri, options) {
  if (!(ri instanceof RemoteInvitation)) {
    throw new RtmError("INVALID_ARGUMENT", "acceptConference takes a RemoteInvitation");
  }
  if (ri.state === RemoteInvitationState.ACCEPT_SENT_TO_LOCAL
      || ri.state === RemoteInvitationState.ACCEPTED) {
    throw new RtmError("ALREADY_ACCEPT");
  }
  if (REMOTE_ENDED.has(ri.state)) throw new RtmError("ALREADY_END");
  const body = parseJson(ri.content);
  if (!body || body.Conference !== true) {
    throw new RtmError("INVALID_ARGUMENT", "not a conference invitation (content without \"Conference\":true)");
  }
  const chanId = checkChanId(body.ChanId);
  const { deviceId, microphone = true, gatewayUid } = options ?? {};
  if (!client._loggedIn) throw new RtmError("NOT_LOGGEDIN", "log in before joining a conference");
  const peer = gatewayUid ? String(gatewayUid) : await client._gatewayUid();
  if (!peer) {
    throw new RtmError("INVALID_ARGUMENT", "no gateway uid: give createClient({gatewayUid}) ([proxy] rtm_account)");
  }
  let stream;
  try {
    stream = microphone === false ? new MediaStream() : await getMicrophone(deviceId);
  } catch (err) {
    ri.refuse(JSON.stringify({ Cmd: "Refused", Reason: "no_microphone" })).catch(() => {});
    throw err;
  }
  try {
    await ri._answer("accept", JSON.stringify({ Mode: 1, Conference: true, ChanId: chanId }));
    return await joinConference(client, chanId, options, { stream, peer });
  } catch (err) {
    for (const track of stream.getTracks()) track.stop();
    throw err;
  }
}
