// A set of IP networks (CIDR ranges or single addresses) for trusted networks and allow lists.
// IPv4-mapped IPv6 addresses (::ffff:192.0.2.1, what a dual-stack listener reports for IPv4
// clients) match their IPv4 ranges.
import { addressInList, compileAddressList, isAddressOrCidr } from './addresses.js';

export class NetworkSet {
  private readonly list;
  readonly empty: boolean;

  /** `entries`: addresses or CIDR ranges (validated by the config schema; a bad one throws). */
  constructor(entries: readonly string[]) {
    const bad = entries.find((e) => !isAddressOrCidr(e));
    if (bad !== undefined) throw new Error(`not an IP address or CIDR range: ${bad}`);
    this.empty = entries.length === 0;
    this.list = compileAddressList(entries);
  }

  has(address: string): boolean {
    return !this.empty && addressInList(this.list, address);
  }
}
