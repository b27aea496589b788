"""Cross-layer insight: jobs' steps joined with the network that carried them.

Pure: records in (from the flight recorder), views out; `qosd top` and `qosd report` draw them.
"""
