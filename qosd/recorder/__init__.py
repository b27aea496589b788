"""The flight recorder: what the network and the jobs did, kept on disk in a bounded ring.

`records` is the vocabulary (one frozen dataclass per kind, each with a JSON form), `ring` the
segment files on disk, `sampler` the reduction of control ticks to one network sample a
second. Everything here but `ring` is pure.
"""
