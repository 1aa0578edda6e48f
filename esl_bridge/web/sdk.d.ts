// Types of the esl-bridge browser SDK (/sdk.js) of esl-bridge 0.1.0, protocol version 1.
// Served beside it at /sdk.d.ts; README "Use the SDK in your page" documents the API.

export declare const PROTOCOL_VERSION: 1;
/** The gateway release this SDK ships with, e.g. "0.1.0". */
export declare const VERSION: string;

export declare const LocalInvitationState: Readonly<{
  IDLE: 0; SENT_TO_REMOTE: 1; RECEIVED_BY_REMOTE: 2; ACCEPTED_BY_REMOTE: 3;
  REFUSED_BY_REMOTE: 4; CANCELED: 5; FAILURE: 6;
}>;
export type LocalInvitationStateValue =
  (typeof LocalInvitationState)[keyof typeof LocalInvitationState];

export declare const RemoteInvitationState: Readonly<{
  IDLE: 0; INVITATION_RECEIVED: 1; ACCEPT_SENT_TO_LOCAL: 2; REFUSED: 3; ACCEPTED: 4;
  CANCELED: 5; FAILURE: 6;
}>;
export type RemoteInvitationStateValue =
  (typeof RemoteInvitationState)[keyof typeof RemoteInvitationState];

export declare const LocalInvitationFailureReason: Readonly<{
  PEER_OFFLINE: 1; PEER_NO_RESPONSE: 2; INVITATION_EXPIRE: 3; NOT_LOGGEDIN: 4;
}>;
export declare const RemoteInvitationFailureReason: Readonly<{
  PEER_OFFLINE: 1; ACCEPT_FAILURE: 2; INVITATION_EXPIRE: 3;
}>;
export type LocalFailureReasonName = keyof typeof LocalInvitationFailureReason;
export type RemoteFailureReasonName = keyof typeof RemoteInvitationFailureReason;

export declare const InvitationApiError: Readonly<{
  INVALID_ARGUMENT: 1; NOT_STARTED: 2; ALREADY_END: 3; ALREADY_ACCEPT: 4; ALREADY_SENT: 5;
}>;

export declare const ConnectionState: Readonly<{
  DISCONNECTED: "DISCONNECTED"; CONNECTING: "CONNECTING"; CONNECTED: "CONNECTED";
  RECONNECTING: "RECONNECTING"; ABORTED: "ABORTED";
}>;
export type ConnectionStateValue = keyof typeof ConnectionState;

export declare const ConnectionChangeReason: Readonly<{
  LOGIN: "LOGIN"; LOGIN_SUCCESS: "LOGIN_SUCCESS"; LOGIN_FAILURE: "LOGIN_FAILURE";
  LOGIN_TIMEOUT: "LOGIN_TIMEOUT"; INTERRUPTED: "INTERRUPTED"; LOGOUT: "LOGOUT";
  BANNED_BY_SERVER: "BANNED_BY_SERVER"; REMOTE_LOGIN: "REMOTE_LOGIN";
}>;
export type ConnectionChangeReasonValue = keyof typeof ConnectionChangeReason;

export declare const LIMITS: Readonly<{ content: 8192; response: 8192; channelId: 64 }>;

/** An API or protocol error: `code` is the protocol's name, `errno` the RTM number. */
export declare class RtmError extends Error {
  readonly name: "RtmError";
  readonly code: string;
  readonly errno: number | undefined;
  /** CONF_REFUSED: the ConfRefused reason (room_full, too_many_rooms, conference_off,
   * switch_error, already_joined). */
  readonly reason?: string;
  constructor(code: string, message?: string, errno?: number);
}

type Listener = (...args: any[]) => void;

declare class Emitter<Events extends Record<string, Listener>> {
  on<K extends keyof Events>(name: K, listener: Events[K]): this;
  off<K extends keyof Events>(name: K, listener: Events[K]): this;
  once<K extends keyof Events>(name: K, listener: Events[K]): this;
}

export interface LocalInvitationEvents {
  [name: string]: Listener;
  LocalInvitationStateChanged: (state: LocalInvitationStateValue, old: LocalInvitationStateValue) => void;
  LocalInvitationReceivedByPeer: () => void;
  LocalInvitationAccepted: (response: string) => void;
  LocalInvitationRefused: (response: string) => void;
  LocalInvitationCanceled: () => void;
  LocalInvitationFailure: (reason: LocalFailureReasonName) => void;
}

export declare class LocalInvitation extends Emitter<LocalInvitationEvents> {
  readonly calleeId: string;
  content: string;
  channelId: string;
  readonly response: string;
  readonly state: LocalInvitationStateValue;
  readonly failureReason: number | null;
  readonly invitationId: string | null;
  getState(): LocalInvitationStateValue;
  send(): Promise<void>;
  cancel(): Promise<void>;
}

export interface RemoteInvitationEvents {
  [name: string]: Listener;
  RemoteInvitationStateChanged: (state: RemoteInvitationStateValue, old: RemoteInvitationStateValue) => void;
  RemoteInvitationAccepted: () => void;
  RemoteInvitationRefused: () => void;
  RemoteInvitationCanceled: () => void;
  RemoteInvitationFailure: (reason: RemoteFailureReasonName) => void;
}

export interface AcceptOptions {
  /** The microphone to use (a MediaDeviceInfo.deviceId). */
  deviceId?: string;
  /** The accept response (default: the call protocol's JSON with this call's ChanId). */
  response?: string;
}

export declare class RemoteInvitation extends Emitter<RemoteInvitationEvents> {
  readonly invitationId: string;
  readonly callerId: string;
  readonly content: string;
  readonly channelId: string;
  response: string;
  readonly state: RemoteInvitationStateValue;
  readonly failureReason: number | null;
  getState(): RemoteInvitationStateValue;
  /** With an options object: accept with audio, resolving to a Call. */
  accept(options: AcceptOptions): Promise<Call>;
  /** With a response text (or nothing): signal only, as in ARCall. */
  accept(response?: string): Promise<void>;
  refuse(response?: string): Promise<void>;
}

export interface ReconnectOptions { initialDelay?: number; maxDelay?: number; maxAttempts?: number }

export interface ClientOptions {
  /** The application id ([global] appid). */
  appId: string;
  /** The WebSocket URL; default: /ws of the origin serving the SDK. */
  url?: string;
  reconnect?: ReconnectOptions;
  requestTimeout?: number;
  /** ICE servers for calls; default: those of /config.json of the SDK's origin. */
  iceServers?: RTCIceServer[];
  /** The gateway's uid ([proxy] rtm_account) that conference messages go to; default:
   * gateway_uid of /config.json of the SDK's origin. */
  gatewayUid?: string;
}

export interface CallOptions {
  /** Carried in the invitation's content as UserData. */
  userData?: string;
  /** Carried as SipData (with Pstn routing, the number dialled). */
  sipData?: string;
  /** The microphone to use (a MediaDeviceInfo.deviceId). */
  deviceId?: string;
}

export interface RtmClientEvents {
  [name: string]: Listener;
  ConnectionStateChanged: (state: ConnectionStateValue, reason: ConnectionChangeReasonValue) => void;
  Reconnecting: (info: { attempt: number; delayMs: number }) => void;
  MessageFromPeer: (message: { text: string }, peerId: string) => void;
  PeersOnlineStatusChanged: (peers: Record<string, "ONLINE" | "OFFLINE">) => void;
  RemoteInvitationReceived: (invitation: RemoteInvitation) => void;
}

export declare class RtmClient extends Emitter<RtmClientEvents> {
  constructor(options: ClientOptions);
  readonly url: string;
  readonly appId: string;
  readonly uid: string | null;
  readonly connectionState: ConnectionStateValue;
  login(uid: string, token?: string): Promise<void>;
  logout(): Promise<void>;
  queryPeersOnlineStatus(uids: Iterable<string>): Promise<Record<string, boolean>>;
  subscribePeersOnlineStatus(uids: Iterable<string>): Promise<Record<string, boolean>>;
  unsubscribePeersOnlineStatus(uids: Iterable<string>): Promise<void>;
  sendMessageToPeer(message: { text: string } | string, peerId: string): Promise<{ hasPeerReceived: boolean }>;
  createLocalInvitation(calleeId: string): LocalInvitation;
  /** Call a number (or user) with audio: the microphone, then the invitation. */
  call(number: string, options?: CallOptions): Promise<Call>;
  /** Join (or create) conference room `chanId` (1-64 bytes of UTF-8) with audio. Rejects
   * with RtmError CONF_REFUSED (`reason`), INVALID_ARGUMENT, NOT_LOGGEDIN, ALREADY_JOINED,
   * PEER_OFFLINE, TIMEOUT, or a CallError for the microphone. */
  joinConference(chanId: string, options?: ConferenceOptions): Promise<Conference>;
  /** Accept an invitation whose content says "Conference":true and join its room. */
  acceptConference(invitation: RemoteInvitation, options?: ConferenceOptions): Promise<Conference>;
}

export declare function createClient(options: ClientOptions): RtmClient;

// ---- calls with audio --------------------------------------------------------------

export declare const CallErrorCode: Readonly<{
  MICROPHONE_DENIED: "MICROPHONE_DENIED";
  MICROPHONE_NOT_FOUND: "MICROPHONE_NOT_FOUND";
  MICROPHONE_BUSY: "MICROPHONE_BUSY";
  INSECURE_CONTEXT: "INSECURE_CONTEXT";
  MEDIA_FAILED: "MEDIA_FAILED";
  INVALID_ARGUMENT: "INVALID_ARGUMENT";
  CALL_ENDED: "CALL_ENDED";
}>;
export type CallErrorCodeValue = keyof typeof CallErrorCode;

export declare class CallError extends Error {
  readonly name: "CallError";
  readonly code: CallErrorCodeValue;
  /** The browser's own error (a DOMException from getUserMedia), if any. */
  readonly cause: unknown;
  constructor(code: CallErrorCodeValue, message?: string, cause?: unknown);
}

export declare const CallState: Readonly<{
  CALLING: "calling"; RINGING: "ringing"; EARLY_MEDIA: "early_media";
  CONNECTED: "connected"; ENDED: "ended";
}>;
export type CallStateValue = (typeof CallState)[keyof typeof CallState];

export type CallEndReason =
  | "hangup" | "remote_hangup" | "remote_ended" | "refused" | "failed" | "media_failed"
  | "lost" | "logout" | "offline"
  // conferences: the gateway's EndCall Reason, or "left" after leave()
  | "kicked" | "room_ended" | "left" | "media_timeout" | "shutdown" | "switch_error";

export interface CallEnd {
  reason: CallEndReason;
  /** refused: the refusal's reason word; failed: the invitation's failure reason;
   * media_failed: ice_failed, peer_gone or the gateway's MediaError reason. */
  detail: string;
  /** refused: the FreeSWITCH hangup cause, when the gateway gave one. */
  cause: string;
}

export interface CallStats {
  rttMs: number | null;
  jitterMs: number | null;
  packetsLost: number | null;
  packetsReceived: number | null;
  lossFraction: number | null;
  /** What is heard, 0..1. */
  audioLevel: number | null;
  /** The microphone, 0..1. */
  localAudioLevel: number | null;
  /** "PCMU/8000", "opus/48000"... */
  codec: string | null;
  bytesSent: number | null;
  bytesReceived: number | null;
  connectionState: RTCPeerConnectionState | null;
}

/** A direction of a call's audio: what the phone hears, or what this page hears. */
export type MediaDirection = "browser_to_switch" | "switch_to_browser";
/** The one-way audio verdicts (README "One-way audio diagnosis"). */
export type MediaVerdict =
  | "ok"
  | "browser_rtp_missing"
  | "gateway_not_sending"
  | "browser_silent"
  | "switch_filler_only"
  | "switch_silent"
  | "browser_not_playing";
export declare const MEDIA_VERDICTS: Readonly<Record<MediaDirection, readonly MediaVerdict[]>>;
export interface MediaProblem {
  direction: MediaDirection;
  verdict: MediaVerdict;
}

export interface CallEvents {
  [name: string]: Listener;
  state: (state: CallStateValue, old: CallStateValue) => void;
  remoteTrack: (track: MediaStreamTrack, remoteAudio: MediaStream) => void;
  ended: (end: CallEnd) => void;
  dtmf: (digits: string) => void;
  media: (connectionState: RTCPeerConnectionState) => void;
  /** A direction's one-way audio verdict changed ("ok" when it recovered). */
  mediaProblem: (problem: MediaProblem) => void;
  /** The browser's path was lost ("ice_disconnected", "ice_failed", "websocket"): the
   * call stays connected while the SDK restarts ICE and the gateway holds the SIP side. */
  reconnecting: (why: string) => void;
  reconnected: () => void;
}

export declare class Call extends Emitter<CallEvents> {
  readonly direction: "outgoing" | "incoming";
  /** The uid the call's messages go to: the number called, or the gateway's uid. */
  readonly peerId: string;
  readonly chanId: string;
  readonly invitation: LocalInvitation | RemoteInvitation;
  readonly localStream: MediaStream;
  /** The other side's audio; attach it to an <audio> element at once. */
  readonly remoteAudio: MediaStream;
  readonly state: CallStateValue;
  readonly ended: boolean;
  readonly muted: boolean;
  /** True from a lost path until its ICE restart is connected. */
  readonly reconnecting: boolean;
  readonly endReason: CallEnd | null;
  readonly pc: RTCPeerConnection | null;
  hangup(): Promise<void>;
  mute(on?: boolean): void;
  sendDtmf(digits: string): Promise<{ delivered: boolean }>;
  getStats(): Promise<CallStats>;
  /** Restart ICE now (done by the SDK itself when the path fails). */
  restartIce(): Promise<void>;
}

// ---- conference rooms ----------------------------------------------------------------

/** A fresh ChanId for a new room (37 characters of [a-z0-9-]). */
export declare function newConferenceId(): string;

export interface ConferenceOptions {
  /** Shown to the other members (at most 64 characters). */
  displayName?: string;
  /** The microphone to use (a MediaDeviceInfo.deviceId). */
  deviceId?: string;
  /** false: join listening only (no microphone). Default true. */
  microphone?: boolean;
  /** The gateway's uid, instead of the client's gatewayUid or /config.json's. */
  gatewayUid?: string;
}

/** One entry of ConfMembers. */
export interface ConferenceMember {
  /** FreeSWITCH's member id: the argument of muteMember() and kick(). */
  readonly Id: number;
  /** The web user's uid, or the phone's number. */
  readonly Uid: string;
  readonly Kind: "web" | "sip";
  readonly Name: string;
  readonly Talking: boolean;
  readonly Muted: boolean;
  readonly Moderator: boolean;
  /** This page's own entry. */
  readonly Self: boolean;
}

export type ConferenceEventName =
  | "list" | "join" | "leave" | "kick" | "mute" | "unmute" | "talking" | "silent";

export type ConferenceErrorReason =
  | "not_moderator" | "no_such_member" | "not_in_room" | "switch_error" | (string & {});

export interface ConferenceEvents extends CallEvents {
  /** After every ConfMembers: the whole list, what changed, and whom it is about. */
  members: (members: readonly ConferenceMember[], event: ConferenceEventName, member: number | null) => void;
  /** A ConfMute / ConfKick / ConfEnd the gateway could not do (ConfError). */
  error: (reason: ConferenceErrorReason) => void;
}

export declare class Conference extends Call {
  on<K extends keyof ConferenceEvents>(name: K, listener: ConferenceEvents[K]): this;
  off<K extends keyof ConferenceEvents>(name: K, listener: ConferenceEvents[K]): this;
  once<K extends keyof ConferenceEvents>(name: K, listener: ConferenceEvents[K]): this;
  /** The room's ChanId. */
  readonly chanId: string;
  /** The FreeSWITCH conference name (fs_cli: conference list). */
  readonly room: string;
  /** The digits a phone dials to join; "" when dial-in is off. */
  readonly dialIn: string;
  readonly moderator: boolean;
  readonly displayName: string;
  /** Always the last ConfMembers' list. */
  readonly members: readonly ConferenceMember[];
  /** This page's member id, once a ConfMembers named it. */
  readonly memberId: number | null;
  /** Mute or unmute this page (the microphone track and ConfMute). */
  mute(on?: boolean): Promise<void>;
  /** Moderator only (else RtmError NOT_MODERATOR). */
  muteMember(id: number, on?: boolean): Promise<void>;
  /** Moderator only: remove a member, web or phone. */
  kick(id: number): Promise<void>;
  /** Moderator only: end the room for everyone (`ended` follows, reason room_ended). */
  end(): Promise<void>;
  /** Leave the room (`ended`, reason left). */
  leave(): Promise<void>;
  /** Invite a web user or a phone number into this room; resolves once sent. */
  invite(uidOrNumber: string): Promise<LocalInvitation>;
}
