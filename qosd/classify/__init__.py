"""Which service each flow belongs to: live sockets (`flowtable`, `dynamic`, `local`) and
captures (`pcap`), both through the one matcher in `policies.flowmatch`."""
