"""Verdicts on raw command output gathered from cluster nodes.

Standard library only: this package runs as ``python3 -m verification`` with
whatever Python 3 is on the operator's PATH. See :mod:`verification.__main__`
for the command line, :mod:`verification.parsers` for the pure parsers and
:mod:`verification.expectations` for the checks and their ``--expect`` keys.
"""
