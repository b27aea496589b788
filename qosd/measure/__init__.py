"""What the network does: TCP sockets (sock_diag), their owners (/proc), and probe RTTs.

Pure estimators (`rates`, `peerstats`, `diagmsg`) are separate from the adapters that touch
the kernel (`sockdiag`, `procfs`, `probe`), so the arithmetic is tested without root.
"""
