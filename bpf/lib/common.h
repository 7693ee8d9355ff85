/* Includes and small helpers every datapath header uses. */
#ifndef MEMBRANE_COMMON_H
#define MEMBRANE_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "layout.h"

#define NS_PER_SEC 1000000000ULL
#define IPPROTO_SCTP_ 132
#define ETH_P_ARP_ 0x0806
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

#endif
