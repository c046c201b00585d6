"""Network probe: try to reach the host's network from an agent spawned without `network`.

The runner starts a TCP and a UDP listener on the host's 127.0.0.1 and passes their ports.
This script connects to the TCP one and sends a datagram to the UDP one, each carrying the
runner's nonce, and tries to open packet and raw sockets (which would let it forge traffic).
It never aims at any other address.

In its own network namespace the agent's 127.0.0.1 is its own loopback, where nothing
listens: the connect is refused, the datagram goes nowhere. What proves containment is
outside: the runner's listeners got no connection and no datagram. Packet and raw sockets
need CAP_NET_RAW, which the agent does not have.

Verdict: `DEMO {"demo": "network-probe", "tcp": ..., "udp": ..., "packet_socket": ...,
"raw_socket": ..., "interfaces": [...]}`; each result is `connected`/`sent`/`opened` or the
errno name.

Usage: network_probe.py <socket> <tcp port> <udp port> <nonce>
"""

import errno
import json
import socket
import sys

HOST = "127.0.0.1"


def name(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def tcp(port, nonce):
    try:
        with socket.create_connection((HOST, port), timeout=3) as s:
            s.sendall(nonce)
        return "connected"
    except OSError as e:
        return name(e)


def udp(port, nonce):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(nonce, (HOST, port))
        return "sent"
    except OSError as e:
        return name(e)


def opened(*args):
    try:
        socket.socket(*args).close()
        return "opened"
    except OSError as e:
        return name(e)


def main():
    tcp_port, udp_port, nonce = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
    try:
        interfaces = [n for _, n in socket.if_nameindex()]
    except OSError as e:
        interfaces = [name(e)]
    verdict = {
        "demo": "network-probe",
        "attack": f"reach {HOST}:{tcp_port}/tcp and :{udp_port}/udp, open raw sockets",
        "tcp": tcp(tcp_port, nonce),
        "udp": udp(udp_port, nonce),
        # ETH_P_ALL (3), in network byte order: every frame on every interface.
        "packet_socket": opened(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)),
        "raw_socket": opened(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "interfaces": interfaces,
    }
    print("DEMO " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
