// ICMP and ICMPv6 message types as Cilium accepts them in `icmps[].fields[].type`: the one table of names and numbers.
import { PROTO_NUMBER, type ICMPField } from "./model.ts";

/** Type names per family (IANA names as Cilium spells them) and their numbers. */
export const ICMP_TYPE_NUMBERS: Readonly<Record<"IPv4" | "IPv6", Readonly<Record<string, number>>>> = {
  IPv4: {
    EchoReply: 0,
    DestinationUnreachable: 3,
    Redirect: 5,
    Echo: 8,
    EchoRequest: 8,
    RouterAdvertisement: 9,
    RouterSelection: 10,
    TimeExceeded: 11,
    ParameterProblem: 12,
    Timestamp: 13,
    TimestampReply: 14,
    Photuris: 40,
    ExtendedEchoRequest: 42,
    ExtendedEchoReply: 43,
  },
  IPv6: {
    DestinationUnreachable: 1,
    PacketTooBig: 2,
    TimeExceeded: 3,
    ParameterProblem: 4,
    EchoRequest: 128,
    EchoReply: 129,
    MulticastListenerQuery: 130,
    MulticastListenerReport: 131,
    MulticastListenerDone: 132,
    RouterSolicitation: 133,
    RouterAdvertisement: 134,
    NeighborSolicitation: 135,
    NeighborAdvertisement: 136,
    RedirectMessage: 137,
    RouterRenumbering: 138,
    ICMPNodeInformationQuery: 139,
    ICMPNodeInformationResponse: 140,
    InverseNeighborDiscoverySolicitation: 141,
    InverseNeighborDiscoveryAdvertisement: 142,
    HomeAgentAddressDiscoveryRequest: 144,
    HomeAgentAddressDiscoveryReply: 145,
    MobilePrefixSolicitation: 146,
    MobilePrefixAdvertisement: 147,
    DuplicateAddressRequestCodeSuffix: 157,
    DuplicateAddressConfirmationCodeSuffix: 158,
    ExtendedEchoRequest: 160,
    ExtendedEchoReply: 161,
  },
};

/** The type names per family, in the table's order (the parser's and the CRD schema's enum). */
export const ICMP_TYPES: Record<"IPv4" | "IPv6", readonly string[]> = {
  IPv4: Object.keys(ICMP_TYPE_NUMBERS.IPv4),
  IPv6: Object.keys(ICMP_TYPE_NUMBERS.IPv6),
};

/** The (protocol number, type) an ICMP field matches, or undefined for an unknown type name. */
export function icmpMatch(f: ICMPField): { proto: number; type: number } | undefined {
  const proto = f.family === "IPv6" ? PROTO_NUMBER.ICMPv6 : PROTO_NUMBER.ICMP;
  const type =
    typeof f.type === "number"
      ? f.type
      : /^\d+$/.test(f.type)
        ? Number(f.type)
        : ICMP_TYPE_NUMBERS[f.family][f.type];
  return type === undefined ? undefined : { proto, type };
}
