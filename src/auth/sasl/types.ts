// Server-side SASL mechanism contract (RFC 6120 §6, RFC 4422).
import type { ChannelBindingType } from '../../core/transport.js';
import type { ScramHash, ScramSecret } from '../../storage/types.js';

export type { ChannelBindingType };

export type SaslFailureCondition =
  | 'aborted' | 'account-disabled' | 'credentials-expired' | 'encryption-required'
  | 'incorrect-encoding' | 'invalid-authzid' | 'invalid-mechanism' | 'malformed-request'
  | 'mechanism-too-weak' | 'not-authorized' | 'temporary-auth-failure';

/** What a mechanism may ask of the session and the account provider. */
export interface SaslContext {
  /** The virtual host the stream is addressed to. */
  host: string;
  /** True when the stream is TLS-protected. */
  secure: boolean;
  /** Channel-binding types the transport can provide, in preference order (empty when not TLS). */
  channelBindingTypes: ChannelBindingType[];
  /** Channel-binding data for a type, or null if unavailable. */
  channelBinding(type: ChannelBindingType): Buffer | null;
  /** SCRAM secrets of an account, or null if there is no such account (or it has none for this hash). */
  getScram(username: string, hash: ScramHash): Promise<ScramSecret | null>;
  /** Verifies a plaintext password (for PLAIN); false when wrong or no such account. */
  verifyPassword(username: string, password: string): Promise<boolean>;
  /** Server-wide secret used to fake SCRAM salts for unknown users (no account enumeration). */
  serverSecret: Buffer;
  /**
   * OAUTHBEARER (RFC 7628): the username (local part on this host) an XMPP token logs in, or null
   * when it is unknown, expired, revoked or for another host. Absent when tokens are not available.
   */
  verifyToken?(token: string): Promise<TokenLogin | null>;
  /** XEP-0493: the OpenID discovery URL of the provider whose access tokens this host accepts. */
  oauthDiscovery?: string;
}

/** A token login: the user, and an id of the credential (sessions logged in with it end when it is revoked by a sign-out). */
export interface TokenLogin {
  username: string;
  credential?: string;
}

export type SaslStep =
  | { kind: 'challenge'; data: Buffer }
  | { kind: 'success'; username: string; data?: Buffer; credential?: string }
  | {
      kind: 'failure';
      condition: SaslFailureCondition;
      text?: string;
      username?: string;
      /**
       * The credentials were checked and are wrong (a wrong password or proof, an unknown user, a
       * bad token): the only failures the login throttle counts. A failed channel-binding
       * negotiation, a malformed message or a directory that is down is not password guessing.
       */
      wrongCredentials?: true;
    };

export interface SaslServerSession {
  /** Feeds the client's data (initial response, or a response to a challenge). */
  step(input: Buffer): Promise<SaslStep>;
}

export interface SaslMechanism {
  readonly name: string;
  /** Whether the mechanism may be offered on this stream (e.g. PLAIN only over TLS, -PLUS only with channel binding). */
  available(ctx: Pick<SaslContext, 'secure' | 'channelBindingTypes'>, opts: { allowPlainWithoutTls: boolean }): boolean;
  start(ctx: SaslContext): SaslServerSession;
}
