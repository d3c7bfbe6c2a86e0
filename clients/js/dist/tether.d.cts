export declare const VERSION = 1;
export declare const SUBPROTOCOL = "tether.v1";
export declare const MIN_MAX_FRAME = 16384;
export declare const DEFAULT_MAX_FRAME: number;
export declare const MAX_MAX_FRAME: number;
export declare const MAX_AUTH_LEN = 4096;
export declare const MAX_PING_PAYLOAD = 1024;
export declare const MAX_REASON_LEN = 1024;
export declare const Kind: {
    readonly HELLO: 1;
    readonly WELCOME: 2;
    readonly REJECT: 3;
    readonly DATA: 16;
    readonly ACK: 17;
    readonly PING: 32;
    readonly PONG: 33;
    readonly CLOSE: 48;
};
export declare const CloseCode: {
    readonly TransportReplaced: 1000;
    readonly GoingAway: 1001;
    readonly HandshakeTimeout: 1002;
    readonly Resync: 1003;
    readonly ProtocolError: 2000;
    readonly FrameTooLarge: 2001;
    readonly Normal: 3000;
    readonly ReplayOverflow: 3001;
    readonly SessionExpired: 3002;
    readonly SequenceViolation: 3003;
    readonly Kicked: 3004;
    readonly FrameLimit: 3005;
};
export declare const RejectReason: {
    readonly UnsupportedVersion: 1;
    readonly UnknownSession: 2;
    readonly InvalidToken: 3;
    readonly TokenReused: 4;
    readonly Overloaded: 5;
    readonly ShuttingDown: 6;
    readonly Unauthorized: 7;
    readonly BadHello: 8;
};
/** True for the close codes assigned in version 1 (§6.1). */
export declare function isAssignedCloseCode(c: number): boolean;
export interface Resume {
    sessionId: Uint8Array;
    token: Uint8Array;
    lastReceived: bigint;
}
/** One protocol frame. Sequence numbers and acks are u64, hence bigint. */
export type Frame = {
    type: 'hello';
    minVersion: number;
    maxVersion: number;
    maxFrame: number;
    idleTimeoutMs: number;
    resume: Resume | null;
    auth: Uint8Array;
} | {
    type: 'welcome';
    version: number;
    resumed: boolean;
    sessionId: Uint8Array;
    token: Uint8Array;
    lastReceived: bigint;
    maxFrame: number;
    idleTimeoutMs: number;
    graceMs: number;
} | {
    type: 'reject';
    reason: number;
    retryAfterMs: number;
    minVersion: number;
    maxVersion: number;
    message: string;
} | {
    type: 'data';
    seq: bigint;
    payload: Uint8Array;
} | {
    type: 'ack';
    ack: bigint;
} | {
    type: 'ping' | 'pong';
    nonce: number;
    ack: bigint;
    payload: Uint8Array;
} | {
    type: 'close';
    code: number;
    retryAfterMs: number;
    reason: string;
};
export type DecodeErrorKind = 'FrameTooLarge' | 'Empty' | 'UnknownType' | 'Truncated' | 'TrailingBytes' | 'BadMagic' | 'ReservedBits' | 'TooLong' | 'InvalidUtf8' | 'InvalidValue';
/** Why bytes are not a valid frame; `closeCode` is what the receiver sends (§4.0). */
export declare class DecodeError extends Error {
    readonly kind: DecodeErrorKind;
    constructor(kind: DecodeErrorKind, detail: string);
    get closeCode(): number;
}
/** Decodes exactly one whole frame (one WebSocket message). Throws DecodeError. */
export declare function decodeFrame(buf: Uint8Array, maxFrame?: number): Frame;
/** Encodes a frame (no length prefix: one WebSocket message). Like the reference, it does not validate limits. */
export declare function encodeFrame(f: Frame): Uint8Array;
/** Cuts a reason to at most 1024 UTF-8 bytes on a character boundary, so the CLOSE always decodes. */
export declare function clipReason(text: string): string;
export declare function toHex(b: Uint8Array): string;
export declare function fromHex(s: string): Uint8Array;
export type Profile = 'default' | 'realtime';
/** What the client drives: a WebSocket, or the HTTP fallback's stand-in for one ({@link HttpSocket}). */
export interface SocketLike {
    readonly readyState: number;
    readonly protocol: string;
    binaryType: string;
    onopen: ((e: Event) => unknown) | null;
    onmessage: ((e: MessageEvent) => unknown) | null;
    onclose: ((e: CloseEvent) => unknown) | null;
    onerror: ((e: Event) => unknown) | null;
    send(data: Uint8Array): void;
    close(): void;
}
/** How a session is carried: a WebSocket (§2.2), or the HTTP fallback (§2.4). */
export type TransportKind = 'websocket' | 'http';
export type LinkState = 'connecting' | 'connected' | 'reconnecting' | 'expired' | 'closed';
export type LossReason = 'closed' | 'heartbeat-timeout' | 'network-changed' | 'handshake-timeout' | 'peer-closed' | 'protocol-error' | 'rejected' | 'offline' | 'token' | 'upgrade';
export type EndReason = 'expired' | 'refused' | 'peer-closed' | 'local-close' | 'sequence-violation' | 'incompatible';
export interface TetherEventMap {
    state: {
        state: LinkState;
        previous: LinkState;
    };
    connected: {
        session: string;
        transport: TransportKind;
    };
    resumed: {
        session: string;
        replayed: number;
        transport: TransportKind;
    };
    disconnected: {
        reason: LossReason;
        message: string;
    };
    /** An attempt failed before the session was (re)established. */
    attemptfailed: {
        reason: LossReason;
        message: string;
    };
    reconnecting: {
        attempt: number;
        delay: number;
    };
    /** The server has every message this client sent up to `seq` (the number `send` returned): they will not be sent again. */
    acked: {
        seq: number;
    };
    message: {
        data: Uint8Array;
        seq: number;
        text(): string;
    };
    rtt: {
        ms: number;
    };
    /** The session ended; `unacked` are our messages the server never acknowledged, oldest first. */
    ended: {
        session: string | null;
        reason: EndReason;
        code: number | null;
        message: string;
        unacked: Uint8Array[];
        restarting: boolean;
    };
}
/** An Event carrying `detail`, without relying on CustomEvent. */
export declare class TetherEvent<T> extends Event {
    readonly detail: T;
    constructor(type: string, detail: T);
}
/** An EventTarget with typed `on(type, fn(detail))` listeners. */
export declare class Emitter<M> extends EventTarget {
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof M & string>(type: K, fn: (detail: M[K]) => void): () => void;
    /** Like `on`, for the next event of that type only. */
    once<K extends keyof M & string>(type: K, fn: (detail: M[K]) => void): () => void;
}
export type StorageLike = Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
export interface Clock {
    now(): number;
    wall(): number;
    setTimeout(fn: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
}
/** Racing a slow connect (§9.7), times in ms. */
export interface RaceOptions {
    /** Longest wait, while no WebSocket of the attempt has opened, before another starts beside them (750). */
    delay?: number;
    /**
     * Shortest such wait (500): the wait is 4 × the last round trip, kept within [minDelay, delay]. (Not the
     * 250 ms of Happy Eyeballs: this racing can last a whole outage, and every client of a server races at once.)
     */
    minDelay?: number;
    /** WebSockets opening at once, 1 to 8 (3); the oldest is closed to make room. 1 turns racing off. */
    maxInFlight?: number;
}
export interface TetherOptions {
    /** Credential sent as HELLO auth (a JWT for the gateway); empty for anonymous. */
    token?: string;
    /**
     * Called for the credential of each fresh session (not for resumes, which the resume token
     * proves), e.g. to fetch a JWT that has not expired: socket.io's `auth` function, SignalR's
     * `accessTokenFactory`. A rejection or throw fails the attempt (`attemptfailed`, reason
     * `token`) and is retried with backoff. A session refused as Unauthorized asks it once more
     * before giving up. Replaces `token`.
     */
    getToken?: () => string | Promise<string>;
    profile?: Profile;
    /** Racing a slow connect (§9.7): default 750 / 500 ms, 3 at once; `{ maxInFlight: 1 }` turns it off. */
    race?: RaceOptions;
    /** Where the session survives a page reload; default window.sessionStorage, null for none. */
    storage?: StorageLike | null;
    storageKey?: string;
    WebSocketImpl?: typeof WebSocket;
    /**
     * The transports to use: WebSocket, and the HTTP fallback (§2.4: a streaming response and POSTs) for
     * networks that let no WebSocket through. Default both: an attempt whose WebSocket fails before it
     * opens (or, if no WebSocket ever opened here, stalls) tries the fallback at once, and a session on
     * the fallback tries WebSocket again every `upgradeCheck` ms, moving there (a resume) when one opens.
     */
    transports?: TransportKind[];
    /** While the session is on the HTTP fallback, how often a WebSocket is tried (ms, 30000). */
    upgradeCheck?: number;
    /**
     * When the page goes away (`pagehide`: a reload, or the tab closing; a page cannot tell which), the
     * server is asked to keep the session this long only (CLOSE 1001, §6.2) instead of its whole grace:
     * a reload resumes within it, and a closed tab leaves its rooms within seconds (ms, 10000; 0: keep
     * the whole grace).
     */
    leaveGrace?: number;
    /** For tests: the HTTP fallback's socket (default: {@link HttpSocket}, over `fetch`). */
    HttpImpl?: new (url: string) => SocketLike;
    /** For tests: a virtual clock and a deterministic random source. */
    clock?: Clock;
    random?: () => number;
}
/** Thrown by `send` when a message cannot be queued (nothing else throws at the app). */
export declare class SendError extends Error {
    readonly kind: 'closed' | 'too-large' | 'buffer-full';
    constructor(kind: 'closed' | 'too-large' | 'buffer-full', message: string);
}
export declare class TetherClient extends Emitter<TetherEventMap> {
    readonly url: string;
    private readonly t;
    private readonly raceCfg;
    private auth;
    private readonly getToken;
    /** A token from `getToken` is held for the next fresh session. */
    private freshToken;
    /** A `getToken` call is in flight (its generation: later answers of older calls are ignored). */
    private tokenCall;
    private tokenPending;
    /** The fresh session was refused as Unauthorized once already with a token from `getToken`. */
    private tokenRetried;
    private readonly storage;
    private readonly key;
    private readonly WS;
    private readonly Http;
    private readonly upgradeEvery;
    private readonly leaveMs;
    /** The kind of the transport carrying (or last carrying) the session. */
    private carrier;
    /** Attempts start with the HTTP fallback: the last session transport was one. */
    private preferHttp;
    /** A WebSocket of this client has opened: a stall is then an outage, not a proxy. */
    private wsOpened;
    /** The current attempt has an HTTP fallback racer (or had one). */
    private attemptHttp;
    /** While on the fallback: when a WebSocket is tried next, and the one being tried. */
    private upgradeAt;
    private upgradeProbe;
    private readonly clock;
    private readonly random;
    private link;
    private session;
    /** Set while a session has no transport: after this the server has surely expired it (§10.2). */
    private resumableUntil;
    private out;
    private inb;
    private hb;
    private backoff;
    private retryNotBefore;
    private offlineUntil;
    private nextTid;
    /** The connection carrying (or handshaking for) the session. */
    private ws;
    /** The WebSockets being opened while `connecting`. */
    private racers;
    private pingPayload;
    private peerMaxFrame;
    private lastRtt;
    /** The last round trip measured, by PING → PONG or HELLO → WELCOME: it paces racing (§9.7). */
    private pacingRtt;
    /**
     * A WebSocket reached the server (opened) but got no WELCOME in time or was closed by it, or the
     * server refused for load (REJECT 5 or 6), since the last WELCOME: attempts do not race (§9.7).
     */
    private serverSlow;
    private lastEnd;
    private reported;
    private queue;
    private timer;
    private busy;
    private dirtyCore;
    private dirtyOut;
    private unlisten;
    constructor(url: string, opts?: TetherOptions);
    get state(): LinkState;
    /** The session id (32 hex digits), or null before the first WELCOME. */
    get sessionId(): string | null;
    /** The kind of transport carrying the session (or that last did), null before the first. */
    get transport(): TransportKind | null;
    /** The last round-trip time measured by PING/PONG, in ms. */
    get rtt(): number | null;
    /** Unacknowledged outgoing messages and their payload bytes. */
    get buffered(): {
        messages: number;
        bytes: number;
    };
    /** Queues a message: written at once if connected, else on the next transport, replayed until acknowledged. */
    send(data: string | Uint8Array): number;
    /** Ends the session deliberately (CLOSE 3000 or a 4xxx code) and stops for good. */
    close(code?: number, reason?: string): void;
    /**
     * Starts again after the session ended for good (`close()`, `disconnect()`, a kick or a
     * refusal): a fresh session, the backoff reset. Does nothing while the client is running.
     */
    connect(): void;
    /** Ends the session (as `close()`); `connect()` opens a fresh one later. */
    disconnect(reason?: string): void;
    /**
     * The page is going away (called on `pagehide`, unless the page is kept in the back-forward cache):
     * the server keeps the session `leaveGrace` ms only (CLOSE 1001, §6.2), enough for a reload to
     * resume it. The session is kept here too, for that reload.
     */
    leaving(): void;
    /** probe_now (§8.7): probe a live link at once (dropped if unanswered), or retry at once while waiting. */
    probe(): void;
    /** Demo aid: drop the WebSocket without a CLOSE, and fail every attempt for `ms` (as a browser that went offline). */
    simulateOffline(ms: number): void;
    /** Runs one input, then persists, reports and re-arms the timer (the drive contract, §1.1). */
    private input;
    private emit;
    private arm;
    private pollTimeout;
    private computeState;
    private onTimeout;
    private startAttempt;
    /** Asks the application's `getToken` for a credential; the attempt starts when it answers. */
    private fetchToken;
    /** Opens one more connection for the current attempt (§9.7). Every handler checks `tid`: a loser's late events do nothing. */
    private openRacer;
    /**
     * Time passed while connecting (§9.7): WebSockets opening for longer than the handshake timeout are
     * closed, another is raced when one is due, and the attempt fails at its deadline — except that a
     * resumable session keeps racing (a silent outage must not leave it waiting on SYN retransmissions
     * or backoff when the path returns), reporting each budget that passed without an answer.
     * A browser cannot tell when a WebSocket's TCP connection is up (Rust's `handle_reachable`), so
     * racing goes on until one opens, and "reached the server" means opened: a hung attempt here
     * never reached it. After the server shed an attempt (`serverSlow`, until a WELCOME) nothing is
     * raced, so the attempt fails at its deadline even for a resumable session.
     */
    private race;
    /** The open WebSocket carrying (or handshaking for) the session. */
    private currentTid;
    /** A WebSocket of the attempt opened: the first wins, the others are closed, HELLO goes out on it. */
    private connected;
    private transportClosed;
    private received;
    /** §8.7: called on online/offline/visibility/pageshow and by `probe()`. */
    private networkChange;
    private onHandshakeFrame;
    private onWelcome;
    private onEstablishedFrame;
    /** Reports an ack that moved past `before`. */
    private noteAcked;
    private onRtt;
    private onClose;
    private protocolError;
    private sendPing;
    /** Writes everything owed on an established transport: new DATA, then an ACK if one is due. */
    private flush;
    private lose;
    private loseNoClose;
    /** last heard + dead_after + (idle if idle > grace) + grace: never before the server gives up (§10.2). */
    private expiryAfter;
    private schedule;
    /** Ends the session: tells the server (if connected and `sendClose`), hands back the unacked, restarts or stops. */
    private endSession;
    private sendFrame;
    /**
     * On the fallback: tries a WebSocket beside it. One that opens means WebSockets get through now: it
     * is closed, and the session moves to a new WebSocket at once (a resume; nothing is lost).
     */
    private tryUpgrade;
    /** Abandons the current connection and any still opening, at once: nothing they still carry is read again (§2.3, §7.6). */
    private dropTransport;
    private listenToPage;
    /**
     * Two keys: `<key>` holds the session (id, token, last_received, the local expiry as a wall-clock
     * deadline), `<key>:out` our unacknowledged messages, so a reload resumes without a gap either way.
     */
    private persist;
    private restore;
}
/**
 * The HTTP fallback (PROTOCOL §2.4) behind the WebSocket interface the client drives: a streaming
 * `POST ?tether=stream` brings the server's frames, and our frames go out in `POST ?tether=send`
 * requests, one at a time (which keeps them in order). Both are simple cross-origin requests
 * (text/plain), so a page needs no preflight. It "opens" when the stream's 200 arrives.
 */
export declare class HttpSocket implements SocketLike {
    private readonly fetchImpl;
    readyState: number;
    readonly protocol = "tether.v1";
    binaryType: string;
    onopen: ((e: Event) => unknown) | null;
    onmessage: ((e: MessageEvent) => unknown) | null;
    onclose: ((e: CloseEvent) => unknown) | null;
    onerror: ((e: Event) => unknown) | null;
    private readonly abort;
    private readonly target;
    private queue;
    private posting;
    constructor(url: string, fetchImpl?: typeof fetch);
    private request;
    private stream;
    send(data: Uint8Array): void;
    private pump;
    close(): void;
    private gone;
}
export type MemberState = 'active' | 'reconnecting' | 'left' | 'expired';
export interface Member {
    session: string;
    user: string;
    name: string;
    state: MemberState;
    rtt_ms: number | null;
}
/** The gateway's error codes (GATEWAY.md §1.2); `not_json` is the client's own (the gateway sent something unreadable). */
export type RoomErrorCode = 'bad_request' | 'request_too_large' | 'bad_room' | 'bad_name' | 'too_many_rooms' | 'room_full' | 'not_member' | 'rate_limited' | 'forbidden' | 'backend_unavailable' | 'too_large_for_members' | 'not_json';
/**
 * An `error` from the gateway: the request's `op` ('' if it could not be read), a `code`, and a `message`
 * for people; `room` when the request named one; `size` and `limit` (bytes) on `request_too_large` and
 * `too_large_for_members`, which also says how many members did not get the `say` (`undelivered`).
 */
export interface RoomError {
    op: string;
    code: RoomErrorCode | string;
    message: string;
    room?: string;
    size?: number;
    limit?: number;
    undelivered?: number;
}
export interface RoomsEventMap {
    /** `count` is the room's exact size; `members` is capped (you first). */
    joined: {
        room: string;
        you: Member;
        members: Member[];
        count: number;
    };
    left: {
        room: string;
    };
    members: {
        room: string;
        members: Member[];
        count: number;
    };
    presence: {
        room: string;
        member: Member;
    };
    roomMessage: {
        room: string;
        from: Member;
        body: unknown;
    };
    publish: {
        room: string | null;
        body: unknown;
    };
    /** The answer to an `rpc`: `result`, or `error` (also settles the `rpc()` promise). */
    reply: {
        id: number;
        result?: unknown;
        error?: {
            code: string;
            message: string;
        };
    };
    error: RoomError;
}
/**
 * An `rpc()` that got no result: `code` is the backend's own, or the gateway's (`backend_unavailable`,
 * `no_backend`, `bad_method`, `reply_too_large`), or the client's: `timeout` (no reply in time; the
 * backend may still act on it: the request is in the session, delivered exactly once) and
 * `session_ended` (the session ended before the reply came).
 */
export declare class RpcError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
/** A join or leave the gateway refused: its `error` event (`op`, `code`, `message`, …). */
export declare class RoomRequestError extends Error {
    readonly detail: RoomError;
    constructor(detail: RoomError);
}
/** The gateway's room protocol: JSON requests (`op`) and events (`ev`) in DATA payloads. */
export declare class Rooms extends Emitter<RoomsEventMap> {
    readonly client: TetherClient;
    private readonly joinedRooms;
    private pending;
    /** Joins and leaves waiting for the gateway's answer, oldest first (answers come in request order). */
    private waiting;
    /** RPCs waiting for their reply, by id. */
    private readonly calls;
    private nextId;
    constructor(client: TetherClient);
    /** Rooms this client has joined (they are joined again if the session is replaced). */
    get rooms(): string[];
    /**
     * Joins `room` (as `name`). Resolves with the gateway's `joined` answer, or rejects with its
     * `error` (a `RoomRequestError`). The membership outlives the session: a fresh session joins
     * again, and a join made while offline is answered once the message gets through.
     */
    join(room: string, name?: string): Promise<RoomsEventMap['joined']>;
    /** Leaves `room`; resolves on the gateway's `left`, rejects with its `error`. */
    leave(room: string): Promise<void>;
    private ask;
    /** Settles the oldest request waiting for `op` (on `room`, when given). */
    private answer;
    /** Says `body` in `room`; the message's sequence number (`acked` reports when the gateway has it). */
    say(room: string, body: unknown): number;
    /** Asks for the member list; answers come back in request order, so a FIFO matches them. */
    members(room: string): Promise<Member[]>;
    /**
     * Asks the application's backend (the gateway's `rpc` hook): resolves with its `result`, or rejects
     * with an `RpcError` (its error, the gateway's, or `timeout` after `timeout` ms, 10 s by default).
     * Sent while offline, it goes out on the resume, like every message.
     */
    rpc(method: string, data?: unknown, opts?: {
        timeout?: number;
    }): Promise<unknown>;
    private op;
    private fire;
    private onMessage;
    /** Membership belongs to the session: a fresh session joins the same rooms again. */
    private onEnded;
}
