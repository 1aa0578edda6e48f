// esl-bridge browser SDK: signalling client, protocol version 1.
//
// A plain ES module (no build step) served by the gateway at /sdk.js:
//
//   import { createClient } from "/sdk.js";
//   const client = createClient({ appId: "myapp" });   // url defaults to /ws of this origin
//   client.on("RemoteInvitationReceived", (ri) => ri.accept());
//   await client.login("1001", token);
//   const inv = client.createLocalInvitation("1005");
//   inv.content = JSON.stringify({ Mode: 1, Conference: false, ChanId: "c1" });
//   inv.on("LocalInvitationAccepted", (response) => { ... });
//   await inv.send();
//
// Objects and event names mirror the RTM call-invitation API (LocalInvitation,
// RemoteInvitation, getState(), content, response, channelId). State numbers, failure
// reasons and API error numbers are those of the protocol reference in the README.

export const PROTOCOL_VERSION = 1;

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

  /** Accept with `this.response` (or the given one), at most 8 KB of UTF-8. */
  async accept(response) { return this._answer("accept", response); }

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
  constructor({ url, appId, reconnect = {}, requestTimeout = 10000 } = {}) {
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
  }

  _newRef() {
    this._refCounter += 1;
    return `${this._refCounter.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }

  _setConnectionState(state, reason) {
    if (this.connectionState === state && state !== ConnectionState.RECONNECTING) return;
    this.connectionState = state;
    this.emit("ConnectionStateChanged", state, reason);
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
    this._failPending("DISCONNECTED");
    // While (re)connecting, the failed attempt itself decides what comes next.
    if (this._stopped || this._connecting) return;
    const code = this._closingNotice?.code ?? ev.code;
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
        if (err instanceof RtmError && err.code === "AUTH_FAILED") {
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
export function createClient({ url, appId, reconnect, requestTimeout } = {}) {
  return new RtmClient({ url, appId, reconnect, requestTimeout });
}
